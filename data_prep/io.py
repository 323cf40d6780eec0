"""Streaming readers for JSONL / JSON / text files, and the JSONL writers of data_prep's outputs.

Readers yield one item per row: a :class:`Record` (a parsed JSON value with its ``source``) or a
:class:`~data_prep.conversation.Reject` for a row that could not be read (bad bytes, bad JSON). Memory stays
flat: JSONL is read line by line, a JSON array is parsed element by element from a buffered reader.

A file that cannot be used at all (missing, empty, truncated JSON, UTF-16, no valid record) raises
:class:`DataPrepError` with ``FILE:LINE: what broke``.

Sources are ``file:line`` (1-based) for JSONL and text, ``file:index`` (0-based array index) for JSON arrays.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from data_prep.conversation import Reject
from data_prep.react import ROOM_PREFIX, WELCOME
from fileio.atomic import AtomicFile

UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16
_WS = " \t\r\n"


class DataPrepError(Exception):
    """A wholly unusable input. The message reads ``FILE:LINE: what broke``."""


@dataclass
class Record:
    source: str
    value: Any


def lone_surrogate(text: str, value: Any) -> bool:
    """True when a ``\\uD800``-style escape in ``text`` left a lone surrogate in ``value``: valid JSON, but no
    UTF-8 output can hold it (every writer would fail on the row)."""
    if "\\u" not in text:  # the common case costs one scan
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return False  # too deep to re-encode here: the row's own checks report it
    return False


_SURROGATE_DETAIL = "a \\u escape encodes a lone surrogate (U+D800-U+DFFF), which is not a character UTF-8 can hold"


def _unreadable(e: BaseException) -> str:
    """Why valid-looking JSON could not be read: Python's parser recurses per level of nesting (RecursionError
    past its limit) and refuses integers of more than 4300 digits (ValueError)."""
    if isinstance(e, RecursionError):
        return "nested deeper than the JSON parser allows"
    return f"a number too long to read ({str(e).split(':')[0]})"


def _sniff(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(4096)
    except FileNotFoundError:
        raise DataPrepError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataPrepError(f"{path}: is a directory, pass a file") from None
    except PermissionError:
        raise DataPrepError(f"{path}: permission denied") from None


def _check_encoding(path: Path, head: bytes) -> None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataPrepError(f"{path}:1: file is UTF-16 encoded; save it as UTF-8")
    if b"\x00" in head:
        raise DataPrepError(f"{path}:1: file has NUL bytes (UTF-16/32 or binary); save it as UTF-8 text")


def detect_container(path: Path) -> str:
    """``"jsonl"``, ``"json"`` (array or pretty-printed objects) or ``"text"``, from the extension and first bytes."""
    head = _sniff(path)
    _check_encoding(path, head)
    body = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    if not body.strip():
        with path.open("rb") as f:  # the first 4 KiB may be blank lines only
            f.seek(len(head))
            if not f.read(1 << 20).strip():
                raise DataPrepError(f"{path}:1: file is empty")
    if path.suffix.lower() == ".txt":
        return "text"
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        first_line = stripped.split(b"\n", 1)[0].strip()
        if first_line == b"{":
            return "json"  # pretty-printed object(s)
        return "jsonl"
    return "jsonl"


class Reader:
    """Iterate the rows of one file. ``bytes_read`` follows progress for a progress bar."""

    def __init__(self, path: str | os.PathLike[str], container: str | None = None) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.container = container or detect_container(self.path)
        self.bytes_read = 0
        self.size = self.path.stat().st_size

    def __iter__(self) -> Iterator[Record | Reject]:
        if self.container == "jsonl":
            return self._jsonl()
        if self.container == "json":
            return self._json()
        if self.container == "text":
            return self._text_blocks()
        raise ValueError(f"unknown container {self.container!r}")

    # -- JSONL ---------------------------------------------------------------------------------------------
    def _jsonl(self) -> Iterator[Record | Reject]:
        good = 0
        first_bad: Reject | None = None
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                self.bytes_read += len(raw)
                if lineno == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM) :]
                if not raw.strip():
                    continue
                src = f"{self.name}:{lineno}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    rej = Reject(src, "invalid_utf8", raw.decode("utf-8", "replace").rstrip("\r\n"),
                                 f"invalid UTF-8 byte at column {e.start + 1}")
                    first_bad = first_bad or rej
                    yield rej
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    rej = Reject(src, "invalid_json", text.rstrip("\r\n"), f"invalid JSON at column {e.colno}: {e.msg}")
                    first_bad = first_bad or rej
                    yield rej
                    continue
                except (RecursionError, ValueError) as e:  # too deep, or an integer past Python's digit limit
                    rej = Reject(src, "invalid_json", text.rstrip("\r\n"), f"unreadable JSON: {_unreadable(e)}")
                    first_bad = first_bad or rej
                    yield rej
                    continue
                good += 1  # valid JSON: a row, even when it is rejected next
                if lone_surrogate(text, value):
                    yield Reject(src, "invalid_utf8", text.rstrip("\r\n"), _SURROGATE_DETAIL)
                    continue
                yield Record(src, value)
        if good == 0:
            if first_bad is not None:
                raise DataPrepError(f"{first_bad.source}: no line of the file is valid JSON ({first_bad.detail})")
            raise DataPrepError(f"{self.name}:1: file is empty")

    # -- JSON array (or concatenated / pretty-printed objects) -------------------------------------------
    def _json(self) -> Iterator[Record | Reject]:
        s = _JsonStream(self, self.path.open("rb"))
        index = 0
        try:
            if not s.skip_ws():
                raise DataPrepError(f"{self.name}:1: file is empty")
            is_array = s.buf[s.pos] == "["
            if is_array:
                s.pos += 1
            while s.at_element(is_array, index):
                value, end = s.decode_element(index)
                src = f"{self.name}:{index}" if is_array else f"{self.name}:{s.line_of(s.pos)}"
                text = s.buf[s.pos : end]
                yield Reject(src, "invalid_utf8", text, _SURROGATE_DETAIL) if lone_surrogate(text, value) \
                    else Record(src, value)
                index += 1
                s.pos = end
                if not s.after_element(is_array, index):
                    break
        finally:
            s.f.close()
        if index == 0:
            raise DataPrepError(f"{self.name}:1: the JSON file holds no records")

    # -- plain text (ReAct trajectories) -----------------------------------------------------------------
    def _text_blocks(self) -> Iterator[Record | Reject]:
        """Yield ``Record(source, (first_line, text))`` per block of lines that starts at a room line.

        Text before the first room line is one reject. The ReAct parsing itself happens in ``formats``.
        """
        block: list[str] = []
        start = 0
        only_header = True  # block so far holds only welcome/blank lines
        n_good = 0
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                self.bytes_read += len(raw)
                if lineno == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM) :]
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    raise DataPrepError(f"{self.name}:{lineno}: invalid UTF-8 bytes; save the file as UTF-8") from None
                opens = line.startswith(ROOM_PREFIX) or line.startswith(WELCOME)
                if opens and not (block and only_header):
                    if block:
                        item = self._emit(start, block)
                        n_good += isinstance(item, Record)
                        yield item
                    block, start, only_header = [], lineno, True
                if not block and not line.strip():
                    continue
                if not block:
                    start = lineno
                block.append(line)
                if line.strip() and not line.startswith(WELCOME):
                    only_header = False
        if block:
            item = self._emit(start, block)
            n_good += isinstance(item, Record)
            yield item
        if n_good == 0:
            raise DataPrepError(f"{self.name}:1: no ReAct trajectory found (each starts with a "
                            f"'{ROOM_PREFIX}' line)")

    def _emit(self, start: int, lines: list[str]) -> Record | Reject:
        src = f"{self.name}:{start}"
        if not (lines[0].startswith(ROOM_PREFIX) or lines[0].startswith(WELCOME)):
            return Reject(src, "unsupported_format", "\n".join(lines),
                          f"text before the first '{ROOM_PREFIX}' line is not a ReAct trajectory")
        return Record(src, (start, "\n".join(lines)))


# -- writers ------------------------------------------------------------------------------------------------
class _JsonStream:
    """A growing window of decoded text on a JSON file, read in chunks so memory stays flat.

    ``buf[pos:]`` is not parsed yet; ``line_base`` is the line number of ``buf[0]``. Errors raise
    :class:`DataPrepError` with the reader's file name.
    """

    def __init__(self, reader: Reader, f: BinaryIO) -> None:
        self.reader = reader
        self.name = reader.name
        self.f = f
        self.udec = codecs.getincrementaldecoder("utf-8")("strict")
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.line_base = 1  # line number of buf[0]
        self.eof = False
        self.want = _CHUNK

    def line_of(self, i: int) -> int:
        return self.line_base + self.buf.count("\n", 0, i)

    def where(self, i: int) -> str:
        col = i - (self.buf.rfind("\n", 0, i) + 1) + 1
        return f"{self.name}:{self.line_of(i)}:{col}"

    def more(self) -> bool:
        """Read and decode the next chunk into ``buf``; False once at end of file."""
        if self.eof:
            return False
        raw = self.f.read(self.want)
        self.reader.bytes_read += len(raw)
        if not self.reader.bytes_read - len(raw) and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        try:
            chunk = self.udec.decode(raw, final=not raw)
        except UnicodeDecodeError as e:
            line = self.line_base + self.buf.count("\n") + raw[: max(e.start, 0)].count(b"\n")
            raise DataPrepError(f"{self.name}:{line}: invalid UTF-8 bytes in a JSON file; "
                                "fix the encoding (only JSONL files can skip single bad lines)") from None
        if not raw:
            self.eof = True
        if self.pos > _CHUNK:  # drop what was consumed
            self.line_base += self.buf.count("\n", 0, self.pos)
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += chunk
        return True

    def skip_ws(self) -> bool:
        """Advance past whitespace; False at end of file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return True
            if not self.more():
                return False

    def at_element(self, is_array: bool, index: int) -> bool:
        """Skip to the next element; False at the end of the data (after the closing ``]`` of an array)."""
        if not self.skip_ws():
            if is_array:
                raise DataPrepError(f"{self.where(self.pos)}: truncated JSON array (file ends after element "
                                    f"{index - 1}, no closing ']')")
            return False
        if is_array and self.buf[self.pos] == "]":
            self.pos += 1
            if self.skip_ws():
                raise DataPrepError(f"{self.where(self.pos)}: extra data after the closing ']' of the JSON array")
            return False
        return True

    def decode_element(self, index: int) -> tuple[Any, int]:
        """Parse the element at ``pos``, reading more chunks while it is incomplete; (value, end)."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                # a number at the buffer end may continue in the next chunk
                if end == len(self.buf) and not self.eof and not isinstance(value, (dict, list, str)):
                    raise json.JSONDecodeError("incomplete", self.buf, end)
                break
            except json.JSONDecodeError as e:
                if self.eof:
                    raise DataPrepError(f"{self.where(e.pos)}: invalid or truncated JSON in element {index} "
                                        f"({e.msg})") from None
                self.want = min(self.want * 2, 1 << 26)
                self.more()  # the element may continue in the next chunk; retry from pos
            except (RecursionError, ValueError) as e:  # valid JSON Python cannot hold; an array cannot skip it
                raise DataPrepError(f"{self.where(self.pos)}: element {index}: {_unreadable(e)}") from None
        self.want = _CHUNK
        return value, end

    def after_element(self, is_array: bool, index: int) -> bool:
        """Check what follows element ``index - 1``; False at end of file (of a non-array)."""
        if not self.skip_ws():
            if is_array:
                raise DataPrepError(f"{self.where(self.pos)}: truncated JSON array (no closing ']' after "
                                    f"element {index - 1})")
            return False
        if is_array:
            if self.buf[self.pos] == ",":
                self.pos += 1
                if self.skip_ws() and self.buf[self.pos] == "]":
                    raise DataPrepError(f"{self.where(self.pos)}: trailing comma before ']' is not valid JSON")
            elif self.buf[self.pos] != "]":
                raise DataPrepError(f"{self.where(self.pos)}: expected ',' or ']' after element {index - 1}")
        return True


class JsonlWriter(AtomicFile):
    """One JSON object per line, UTF-8, written atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.count = 0

    def add(self, obj: Any) -> None:
        self.fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.count += 1

    def add_line(self, line: str) -> None:
        """A row already serialised as :meth:`add` would write it (``json.dumps(obj, ensure_ascii=False)``)."""
        self.fh.write(line if line.endswith("\n") else line + "\n")
        self.count += 1


class RejectWriter(JsonlWriter):
    """``rejects.jsonl``: one :class:`Reject` per line."""

    def reject(self, rej: Reject) -> None:
        d = rej.to_dict()
        d.setdefault("detail", "")
        self.add(d)


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """A small JSON file (config such as dataset_info.json) read whole; errors become :class:`DataPrepError`."""
    p = Path(path)
    head = _sniff(p)
    _check_encoding(p, head)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataPrepError(f"{p}: invalid UTF-8 at byte {e.start}") from None
    if not text.strip():
        raise DataPrepError(f"{p}:1: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataPrepError(f"{p}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
