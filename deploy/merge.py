"""Merge a LoRA adapter into its 16-bit base, one tensor at a time.

The base is read lazily from its safetensors files; each target weight becomes ``W + scale * B @ A``
(computed in float32, written in the base dtype), every other tensor is copied through. The result is a
normal Hugging Face folder (safetensors shards, config, tokenizer, chat template) that vLLM and TGI serve
directly::

    vllm serve runs/<run>/export/merged --served-model-name my-model
    docker run -p 8080:80 -v $PWD/runs/<run>/export/merged:/model ghcr.io/huggingface/text-generation-inference \
        --model-id /model

A 4-bit base (bitsandbytes) is never merged into: quantized weights would lose the adapter's small update.
Pass the 16-bit model instead (``--base``); the error message names it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.lora import LoraAdapter
from deploy.safetensors_io import (
    PlannedTensor,
    StreamingSafetensorsWriter,
    TensorSource,
    plan_shards,
    row_chunks,
    st_dtype_of,
)
from fileio.atomic import atomic_dir

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)


@dataclass
class MergeSource:
    """A base model folder plus an optional adapter: the tensors of the merged model, produced lazily."""

    base_dir: Path
    adapter: LoraAdapter | None = None

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        self.config: dict[str, Any] = json.loads((self.base_dir / "config.json").read_text())
        check_not_quantized(self.config, self.base_dir)
        self.base = TensorSource(self.base_dir)
        self.untie = False
        if self.adapter is not None:
            missing = [
                n
                for n in list(self.adapter.modules) + list(self.adapter.replacements)
                if n not in self.base and n != "lm_head.weight"
            ]
            if missing:
                raise ValueError(
                    f"adapter {self.adapter.path} changes tensors the base {self.base_dir} "
                    f"does not have: {missing[:3]} (wrong --base?)"
                )
            tied = bool(self.config.get("tie_word_embeddings", False)) and "lm_head.weight" not in self.base
            if tied and self.adapter.touches("lm_head.weight"):
                self.untie = True  # a trained lm_head copy: the merged model gets its own output matrix

    def names(self) -> list[str]:
        names = self.base.names()
        if self.untie:
            names.append("lm_head.weight")
        return names

    def shape(self, name: str) -> tuple[int, ...]:
        if self.adapter is not None and name in self.adapter.replacements:
            return tuple(self.adapter.tensor(self.adapter.replacements[name]).shape)
        return self.base.meta(name).shape

    def dtype(self, name: str) -> str:
        return self.base.meta("model.embed_tokens.weight" if name not in self.base else name).dtype

    def changed(self, name: str) -> bool:
        return self.adapter is not None and self.adapter.touches(name)

    def get(self, name: str) -> Any:
        """The merged tensor (torch): float32 when the adapter changed it, the stored tensor otherwise."""
        if name == "lm_head.weight" and self.untie and name not in self.base:
            return self.adapter.merge_into(name, self.base.get("model.embed_tokens.weight"))  # type: ignore[union-attr]
        t = self.base.get(name)
        if self.changed(name):
            return self.adapter.merge_into(name, t)  # type: ignore[union-attr]
        return t

    def get_rows(self, name: str, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of the merged tensor (float32 when the adapter changes it)."""
        if name == "lm_head.weight" and self.untie and name not in self.base:
            rows = self.base.get_rows("model.embed_tokens.weight", start, stop)
            return self.adapter.merge_rows(name, rows, start, stop)  # type: ignore[union-attr]
        rows = self.base.get_rows(name, start, stop)
        if self.changed(name):
            return self.adapter.merge_rows(name, rows, start, stop)  # type: ignore[union-attr]
        return rows

    def merged_config(self) -> dict[str, Any]:
        cfg = dict(self.config)
        if self.untie:
            cfg["tie_word_embeddings"] = False
        if self.adapter is not None and "model.embed_tokens.weight" in self.adapter.replacements:
            cfg["vocab_size"] = self.shape("model.embed_tokens.weight")[0]
        return cfg

    def iter_tensors(self) -> Iterator[tuple[str, Any]]:
        for name in self.names():
            yield name, self.get(name)


def check_not_quantized(config: dict[str, Any], where: Path) -> None:
    q = config.get("quantization_config")
    if not q:
        return
    method = q.get("quant_method", "?")
    hint = ""
    name = str(config.get("_name_or_path", ""))
    if name.endswith("-bnb-4bit"):
        hint = f" (for {name} that is {name[: -len('-bnb-4bit')]})"
    raise ValueError(
        f"{where}: the base is quantized ({method}); merging into quantized weights would lose the adapter. "
        f"Pass the 16-bit base model with --base{hint}."
    )


def sixteen_bit_name(name: str) -> str:
    """``unsloth/Qwen2.5-7B-Instruct-bnb-4bit`` -> ``unsloth/Qwen2.5-7B-Instruct`` (same weights, 16-bit)."""
    return name[: -len("-bnb-4bit")] if name.endswith("-bnb-4bit") else name


def resolve_base(adapter: LoraAdapter, base: str | None) -> Path:
    """The local folder of the 16-bit base model for ``adapter`` (``base`` overrides the adapter's own record)."""
    from models.registry import resolve_source

    name = base or adapter.base_model
    if not name:
        raise ValueError(
            f"{adapter.path}/adapter_config.json has no base_model_name_or_path; pass --base NAME|PATH"
        )
    if name.endswith("-bnb-4bit"):
        # QLoRA trained on the 4-bit copy; merge into the 16-bit weights of the same model instead.
        name = sixteen_bit_name(name)
    source = resolve_source(name)
    path = Path(source)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(
                snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model"])
            )
        except Exception as exc:  # offline, missing repo, ...
            raise ValueError(
                f"base model {name!r} (16-bit) is not available locally and could not be downloaded: {exc}; "
                "pass --base with a local folder of the 16-bit model"
            ) from exc
    return path


def copy_tokenizer(dst: Path, *sources: Path) -> Path:
    """Copy tokenizer files into ``dst`` from the first source that has a tokenizer (the adapter's wins)."""
    for src in sources:
        if src is not None and (Path(src) / "tokenizer_config.json").is_file():
            for name in TOKENIZER_FILES:
                f = Path(src) / name
                if f.is_file():
                    shutil.copyfile(f, dst / name)
            return Path(src)
    raise FileNotFoundError(f"no tokenizer_config.json in any of {[str(s) for s in sources]}")


def merge_to_folder(
    source: MergeSource,
    out_dir: Path,
    *,
    tokenizer_dirs: tuple[Path, ...] = (),
    dtype: str | None = None,
    max_shard_bytes: int = 2 << 30,
    progress: bool = True,
) -> Path:
    """Write the merged model to ``out_dir`` (atomically: a temp folder renamed at the end).

    ``dtype`` is "float16", "bfloat16" or "float32"; by default the base's own dtype.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    planned = _plan_merged(source, dtype)
    shards = plan_shards(planned, max_shard_bytes)
    with atomic_dir(out_dir) as tmp:
        weight_map = _write_shards(source, shards, tmp, total=sum(t.nbytes for t in planned), progress=progress)
        if len(shards) > 1:
            index = {"metadata": {"total_size": sum(t.nbytes for t in planned)}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        _write_side_files(source, tmp, dtype=dtype, tokenizer_dirs=tokenizer_dirs)
    return out_dir


def _plan_merged(source: MergeSource, dtype: str | None) -> list[PlannedTensor]:
    """Name, shape and safetensors dtype of every merged tensor (``dtype`` overrides the base's)."""
    import torch

    target = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    planned: list[PlannedTensor] = []
    for name in source.names():
        st = st_dtype_of(target[dtype]) if dtype else source.dtype(name)
        planned.append(PlannedTensor(name, source.shape(name), st))
    return planned


def _write_shards(
    source: MergeSource, shards: list[list[PlannedTensor]], folder: Path, *, total: int, progress: bool
) -> dict[str, str]:
    """Stream every shard into ``folder`` row chunk by row chunk; returns tensor name -> shard file name."""
    import torch
    from tqdm import tqdm

    weight_map: dict[str, str] = {}
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="merge", disable=not progress)
    for i, shard in enumerate(shards):
        fname = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        )
        writer = StreamingSafetensorsWriter(folder / fname, shard, metadata={"format": "pt"})
        for t in shard:
            torch_dtype = getattr(torch, _torch_name(t.dtype))
            for start, stop in row_chunks(t.shape):
                rows = source.get_rows(t.name, start, stop)
                writer.write_part(t.name, rows.to(torch_dtype))
                del rows
            weight_map[t.name] = fname
            bar.update(t.nbytes)
        writer.close()
    bar.close()
    return weight_map


def _write_side_files(
    source: MergeSource, folder: Path, *, dtype: str | None, tokenizer_dirs: tuple[Path, ...]
) -> None:
    """config.json (merged, with ``dtype``), generation_config.json and the tokenizer files."""
    cfg = source.merged_config()
    if dtype:
        cfg["dtype"] = dtype
        cfg.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    gen = source.base_dir / "generation_config.json"
    if gen.is_file():
        shutil.copyfile(gen, folder / "generation_config.json")
    copy_tokenizer(folder, *tokenizer_dirs, source.base_dir)


def _torch_name(st: str) -> str:
    return {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(st, st.lower())
