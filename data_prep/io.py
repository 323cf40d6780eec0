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
from typing import Any

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
                good += 1
                yield Record(src, value)
        if good == 0:
            if first_bad is not None:
                raise DataPrepError(f"{first_bad.source}: no line of the file is valid JSON ({first_bad.detail})")
            raise DataPrepError(f"{self.name}:1: file is empty")

    # -- JSON array (or concatenated / pretty-printed objects) -------------------------------------------
    def _json(self) -> Iterator[Record | Reject]:
        decoder = json.JSONDecoder()
        udec = codecs.getincrementaldecoder("utf-8")("strict")
        f = self.path.open("rb")
        buf = ""
        pos = 0
        line_base = 1  # line number of buf[0]
        eof = False
        want = _CHUNK

        def where(i: int) -> str:
            line = line_base + buf.count("\n", 0, i)
            col = i - (buf.rfind("\n", 0, i) + 1) + 1
            return f"{self.name}:{line}:{col}"

        def more() -> bool:
            nonlocal buf, eof, line_base, pos
            if eof:
                return False
            raw = f.read(want)
            self.bytes_read += len(raw)
            if not self.bytes_read - len(raw) and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            try:
                chunk = udec.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                line = line_base + buf.count("\n") + raw[: max(e.start, 0)].count(b"\n")
                raise DataPrepError(f"{self.name}:{line}: invalid UTF-8 bytes in a JSON file; "
                                "fix the encoding (only JSONL files can skip single bad lines)") from None
            if not raw:
                eof = True
            if pos > _CHUNK:  # drop what was consumed
                line_base += buf.count("\n", 0, pos)
                buf = buf[pos:]
                pos = 0
            buf += chunk
            return True

        def skip_ws() -> bool:
            """Advance past whitespace; False at end of file."""
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos < len(buf):
                    return True
                if not more():
                    return False

        try:
            if not skip_ws():
                raise DataPrepError(f"{self.name}:1: file is empty")
            is_array = buf[pos] == "["
            if is_array:
                pos += 1
            index = 0
            while True:
                if not skip_ws():
                    if is_array:
                        raise DataPrepError(f"{where(pos)}: truncated JSON array (file ends after element {index - 1}, "
                                        "no closing ']')")
                    break
                if is_array and buf[pos] == "]":
                    pos += 1
                    if skip_ws():
                        raise DataPrepError(f"{where(pos)}: extra data after the closing ']' of the JSON array")
                    break
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        # a number at the buffer end may continue in the next chunk
                        if end == len(buf) and not eof and not isinstance(value, (dict, list, str)):
                            raise json.JSONDecodeError("incomplete", buf, end)
                        break
                    except json.JSONDecodeError as e:
                        if eof:
                            raise DataPrepError(f"{where(e.pos)}: invalid or truncated JSON in element {index} "
                                            f"({e.msg})") from None
                        want = min(want * 2, 1 << 26)
                        more()  # the element may continue in the next chunk; retry from pos
                want = _CHUNK
                src = f"{self.name}:{index}" if is_array else f"{self.name}:{line_base + buf.count(chr(10), 0, pos)}"
                yield Record(src, value)
                index += 1
                pos = end
                if not skip_ws():
                    if is_array:
                        raise DataPrepError(f"{where(pos)}: truncated JSON array (no closing ']' after element {index - 1})")
                    break
                if is_array:
                    if buf[pos] == ",":
                        pos += 1
                        if skip_ws() and buf[pos] == "]":
                            raise DataPrepError(f"{where(pos)}: trailing comma before ']' is not valid JSON")
                    elif buf[pos] != "]":
                        raise DataPrepError(f"{where(pos)}: expected ',' or ']' after element {index - 1}")
        finally:
            f.close()
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
class JsonlWriter(AtomicFile):
    """One JSON object per line, UTF-8, written atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.count = 0

    def add(self, obj: Any) -> None:
        self.fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
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
