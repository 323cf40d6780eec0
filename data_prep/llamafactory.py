"""LLaMA-Factory's ``dataset_info.json``: registered SFT datasets read with their own columns and tags.

Honoured keys (names and defaults as in LLaMA-Factory's ``data/README.md``): ``file_name`` (a file or a folder,
relative to the ``dataset_info.json`` dir), ``formatting`` (``alpaca`` default, or ``sharegpt``), ``columns``
(prompt, query, response, history, messages, system, tools) and ``tags`` (role_tag, content_tag, user_tag,
assistant_tag, observation_tag, function_tag, system_tag), ``ranking`` with ``chosen``/``rejected`` columns
(preference pairs: strings in alpaca files, ``{from, value}`` messages in sharegpt ones), ``kto_tag`` (the
boolean feedback of unpaired preference rows), and pretraining entries (``columns: {"prompt": "text"}``, or any
alpaca entry under ``--stage pt``: the prompt column is the text). Message contents may be LLaMA-Factory v1
content parts with ``loss_weight``. Hub-only datasets raise :class:`DataPrepError` with what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from data_prep.formats import Columns, FormatOptions, Tags
from data_prep.io import DataPrepError, read_json_file

_READABLE = (".json", ".jsonl")
_COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected",
                "kto_tag")
_TAG_KEYS = tuple(f.name for f in fields(Tags))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: list[Path]
    format: str  # "alpaca", "sharegpt" or "text"
    columns: Columns
    tags: Tags

    def options(self, base: FormatOptions) -> FormatOptions:
        return FormatOptions(base.question_field, base.answer_field, base.system_prompt, self.columns, self.tags,
                             text_field=self.columns.prompt)


def _columns(name: str, formatting: str, cols: dict[str, Any], where: str, ranking: bool) -> Columns:
    unknown = set(cols) - set(_COLUMN_KEYS) - {"images", "videos", "audios"}
    if unknown:
        raise DataPrepError(f"{where}: dataset '{name}' has unknown columns {sorted(unknown)}; "
                        f"known: {', '.join(_COLUMN_KEYS)}")
    for key, value in cols.items():
        if value is not None and not isinstance(value, str):
            raise DataPrepError(f"{where}: dataset '{name}' column '{key}' must be a string")
    # LLaMA-Factory defaults: prompt=instruction, query=input, response=output, messages=conversations;
    # history, system and tools are unused unless named.
    return Columns(
        prompt=cols.get("prompt") or "instruction",
        query=cols.get("query", "input"),
        response=cols.get("response") or "output",
        history=cols.get("history"),
        messages=cols.get("messages") or "conversations",
        system=cols.get("system"),
        tools=cols.get("tools"),
        chosen=cols.get("chosen", "chosen") if ranking else None,
        rejected=cols.get("rejected", "rejected") if ranking else None,
        kto_tag=cols.get("kto_tag"),
    )


def _tags(name: str, tags: dict[str, Any], where: str) -> Tags:
    unknown = set(tags) - set(_TAG_KEYS)
    if unknown:
        raise DataPrepError(f"{where}: dataset '{name}' has unknown tags {sorted(unknown)}; known: {', '.join(_TAG_KEYS)}")
    for key, value in tags.items():
        if not isinstance(value, str) or not value:
            raise DataPrepError(f"{where}: dataset '{name}' tag '{key}' must be a non-empty string")
    return Tags(**tags)


def _inside(path: Path, root: Path, escape: str) -> bool:
    """Whether ``path``, symlinks followed, lies in ``root`` (already resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise DataPrepError(f"{escape}: cannot follow {path} ({e})") from None


def _files(name: str, base: Path, file_name: str, where: str) -> list[Path]:
    """The files of an entry's ``file_name``. Only files inside the dataset_info.json folder are read, so a
    shared dataset_info.json cannot point data_prep at files elsewhere (``../``, absolute paths, symlinks)."""
    escape = f"{where}: dataset '{name}': file_name {file_name!r}"
    if "\x00" in file_name:
        raise DataPrepError(f"{escape} has a NUL character")
    p = Path(file_name)
    if p.is_absolute():
        raise DataPrepError(f"{escape} is an absolute path; give a path relative to {base}")
    root = base.resolve()
    p = base / p
    if not _inside(p, root, escape):
        raise DataPrepError(f"{escape} points outside the folder of dataset_info.json ({root})")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataPrepError(f"{where}: dataset '{name}' folder {p} is empty")
        outside = [f.name for f in files if not _inside(f, root, escape)]
        if outside:
            raise DataPrepError(f"{escape}: {', '.join(outside)} in that folder links outside the folder of "
                                f"dataset_info.json ({root})")
    elif p.is_file():
        files = [p]
    else:
        raise DataPrepError(f"{where}: dataset '{name}': file_name {file_name!r} not found (looked at {p})")
    for f in files:
        if f.suffix.lower() not in _READABLE:
            raise DataPrepError(f"{f}: dataset '{name}': only .json/.jsonl files are read; convert "
                            f"{f.suffix or 'this'} files to JSON Lines")
    return files


def load_datasets(info_path: str | Path, names: list[str], stage: str = "sft") -> list[DatasetSpec]:
    """Resolve ``names`` (``--dataset a,b`` split by the caller or here) in a ``dataset_info.json``.

    ``stage`` pt reads alpaca entries as pretraining text (LLaMA-Factory: only the prompt column is used)."""
    info_path = Path(info_path)
    info = read_json_file(info_path)
    where = str(info_path)
    if not isinstance(info, dict):
        raise DataPrepError(f"{where}:1: dataset_info.json must be an object of dataset_name -> description")
    wanted = [n.strip() for raw in names for n in raw.split(",") if n.strip()]
    if not wanted:
        raise DataPrepError(f"{where}: pass --dataset NAME[,NAME] (available: {', '.join(sorted(info)) or 'none'})")
    specs = []
    for name in wanted:
        if name not in info:
            raise DataPrepError(f"{where}: dataset '{name}' is not registered; available: {', '.join(sorted(info))}")
        d = info[name]
        if not isinstance(d, dict):
            raise DataPrepError(f"{where}: dataset '{name}' description must be an object")
        cols = d.get("columns") or {}
        tags = d.get("tags") or {}
        if not isinstance(cols, dict) or not isinstance(tags, dict):
            raise DataPrepError(f"{where}: dataset '{name}': 'columns' and 'tags' must be objects")
        ranking = bool(d.get("ranking"))
        if ranking and "kto_tag" in cols:
            raise DataPrepError(f"{where}: dataset '{name}' has both ranking and kto_tag; a dataset is pairs (ranking) "
                                "or KTO rows (kto_tag), not both")
        if ("chosen" in cols or "rejected" in cols) and not ranking:
            raise DataPrepError(f"{where}: dataset '{name}' names chosen/rejected columns without \"ranking\": true; "
                                "add it (a preference dataset)")
        if "file_name" not in d:
            hub = d.get("hf_hub_url") or d.get("ms_hub_url") or d.get("om_hub_url") or d.get("script_url")
            raise DataPrepError(f"{where}: dataset '{name}' has no file_name"
                            + (f" (only a hub/script source {hub!r}; download it and set file_name)" if hub else ""))
        formatting = d.get("formatting", "alpaca")
        if formatting not in ("alpaca", "sharegpt"):
            raise DataPrepError(f"{where}: dataset '{name}' formatting {formatting!r} is not supported; "
                            "use alpaca or sharegpt")
        # LLaMA-Factory's pretraining entries name only the text column (prompt); under pt any alpaca entry is text.
        text = formatting == "alpaca" and not ranking and "kto_tag" not in cols and (
            stage == "pt" or set(cols) == {"prompt"})
        specs.append(DatasetSpec(
            name=name,
            files=_files(name, info_path.parent, str(d["file_name"]), where),
            format="text" if text else formatting,
            columns=_columns(name, formatting, cols, where, ranking),
            tags=_tags(name, tags, where),
        ))
    return specs
