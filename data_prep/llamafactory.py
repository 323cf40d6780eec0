"""LLaMA-Factory's ``dataset_info.json``: registered SFT datasets read with their own columns and tags.

Honoured keys (names and defaults as in LLaMA-Factory's ``data/README.md``): ``file_name`` (a file or a folder,
relative to the ``dataset_info.json`` dir), ``formatting`` (``alpaca`` default, or ``sharegpt``), ``columns``
(prompt, query, response, history, messages, system, tools) and ``tags`` (role_tag, content_tag, user_tag,
assistant_tag, observation_tag, function_tag, system_tag). Preference datasets (``ranking``, ``chosen`` /
``rejected`` columns, ``kto_tag``) and hub-only datasets raise :class:`DataPrepError` with what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from data_prep.formats import Columns, FormatOptions, Tags
from data_prep.io import DataPrepError, read_json_file

_READABLE = (".json", ".jsonl")
_COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools")
_TAG_KEYS = tuple(f.name for f in fields(Tags))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: list[Path]
    format: str  # "alpaca" or "sharegpt"
    columns: Columns
    tags: Tags

    def options(self, base: FormatOptions) -> FormatOptions:
        return FormatOptions(base.question_field, base.answer_field, base.system_prompt, self.columns, self.tags)


def _columns(name: str, formatting: str, cols: dict[str, Any], where: str) -> Columns:
    unknown = set(cols) - set(_COLUMN_KEYS) - {"images", "videos", "audios", "chosen", "rejected", "kto_tag"}
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
    )


def _tags(name: str, tags: dict[str, Any], where: str) -> Tags:
    unknown = set(tags) - set(_TAG_KEYS)
    if unknown:
        raise DataPrepError(f"{where}: dataset '{name}' has unknown tags {sorted(unknown)}; known: {', '.join(_TAG_KEYS)}")
    for key, value in tags.items():
        if not isinstance(value, str) or not value:
            raise DataPrepError(f"{where}: dataset '{name}' tag '{key}' must be a non-empty string")
    return Tags(**tags)


def _files(name: str, base: Path, file_name: str, where: str) -> list[Path]:
    p = Path(file_name)
    if not p.is_absolute():
        p = base / p
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataPrepError(f"{where}: dataset '{name}' folder {p} is empty")
    elif p.is_file():
        files = [p]
    else:
        raise DataPrepError(f"{where}: dataset '{name}': file_name {file_name!r} not found (looked at {p})")
    for f in files:
        if f.suffix.lower() not in _READABLE:
            raise DataPrepError(f"{f}: dataset '{name}': only .json/.jsonl files are read; convert "
                            f"{f.suffix or 'this'} files to JSON Lines")
    return files


def load_datasets(info_path: str | Path, names: list[str]) -> list[DatasetSpec]:
    """Resolve ``names`` (``--dataset a,b`` split by the caller or here) in a ``dataset_info.json``."""
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
        if d.get("ranking") or "chosen" in cols or "rejected" in cols or "kto_tag" in cols:
            raise DataPrepError(f"{where}: dataset '{name}' is a preference dataset (ranking/chosen/rejected/kto_tag); "
                            "preference data (DPO/ORPO/KTO) is not supported yet, register an SFT dataset")
        if "file_name" not in d:
            hub = d.get("hf_hub_url") or d.get("ms_hub_url") or d.get("om_hub_url") or d.get("script_url")
            raise DataPrepError(f"{where}: dataset '{name}' has no file_name"
                            + (f" (only a hub/script source {hub!r}; download it and set file_name)" if hub else ""))
        formatting = d.get("formatting", "alpaca")
        if formatting not in ("alpaca", "sharegpt"):
            raise DataPrepError(f"{where}: dataset '{name}' formatting {formatting!r} is not supported; "
                            "use alpaca or sharegpt")
        specs.append(DatasetSpec(
            name=name,
            files=_files(name, info_path.parent, str(d["file_name"]), where),
            format=formatting,
            columns=_columns(name, formatting, cols, where),
            tags=_tags(name, tags, where),
        ))
    return specs
