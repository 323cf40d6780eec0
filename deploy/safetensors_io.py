"""Lazy safetensors reading and streaming safetensors writing.

:class:`TensorSource` opens every shard of a Hugging Face model folder (``model.safetensors`` or
``model-0000x-of-0000y.safetensors`` with its index) with ``safe_open`` and hands out one tensor at a time,
so nothing forces the whole model into memory.

:class:`StreamingSafetensorsWriter` writes the safetensors format itself: all shapes and dtypes are known
up front (they come from the base model), so the header can be written first and then each tensor's bytes
in order. Peak memory is one tensor, not one shard.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fileio.atomic import AtomicFile

# safetensors dtype names <-> torch dtypes (by name, to keep torch out of the import path of this table).
_ST_TO_TORCH = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F64": "float64",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
# Stored dtypes -> the numpy dtype their bytes are read as (BF16 as raw 16-bit words, widened afterwards).
_NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_ITEMSIZE = {
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F64": 8,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def st_dtype_of(torch_dtype: Any) -> str:
    """The safetensors dtype string for a torch dtype."""
    name = str(torch_dtype).replace("torch.", "")
    for st, tn in _ST_TO_TORCH.items():
        if tn == name:
            return st
    raise ValueError(f"unsupported dtype {torch_dtype} for safetensors")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder, in index order."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in dict.fromkeys(weight_map.values())]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    if shards:
        return shards
    raise FileNotFoundError(
        f"{folder}: no model.safetensors or model-*-of-*.safetensors; save the model with "
        "save_pretrained(safe_serialization=True) first"
    )


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string (F32, BF16, ...)
    file: Path
    offset: int = 0  # where the tensor's bytes start in ``file``

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _ITEMSIZE[self.dtype]


class TensorSource:
    """Lazy, read-only view of the tensors of a HF model folder (or a single safetensors file)."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        files = [path] if path.is_file() else weight_files(path)
        self._meta: dict[str, TensorMeta] = {}
        for f in files:
            header, data_start = _read_header_at(f)
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                offset = data_start + int(info["data_offsets"][0])
                self._meta[name] = TensorMeta(name, tuple(info["shape"]), info["dtype"], f, offset)

    def names(self) -> list[str]:
        return list(self._meta)

    def __contains__(self, name: str) -> bool:
        return name in self._meta

    def meta(self, name: str) -> TensorMeta:
        return self._meta[name]

    def total_bytes(self) -> int:
        return sum(m.nbytes for m in self._meta.values())

    def get(self, name: str) -> Any:
        """One tensor as a torch tensor (its stored dtype).

        The file is opened per call: a long-lived memory map would keep every page read so far resident in
        this process (RSS would grow to the model size while streaming).
        """
        from safetensors import safe_open

        with safe_open(str(self._meta[name].file), framework="pt") as handle:
            return handle.get_tensor(name)

    def get_rows(self, name: str, start: int, stop: int) -> Any:
        """Rows ``start:stop`` (first dimension) of one tensor, reading only those bytes."""
        from safetensors import safe_open

        with safe_open(str(self._meta[name].file), framework="pt") as handle:
            return handle.get_slice(name)[start:stop]

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of one tensor as numpy, with plain reads (no torch, no memory map, so only
        these bytes become resident). Floats come back in their stored dtype, BF16 as float32 (numpy has no
        bfloat16)."""
        meta = self._meta[name]
        if meta.dtype not in _NUMPY:
            raise ValueError(f"{name}: dtype {meta.dtype} cannot be read as numpy")
        shape = (stop - start, *meta.shape[1:]) if meta.shape else ()
        out = np.empty(shape, dtype=_NUMPY[meta.dtype])
        row_bytes = out.nbytes // max(stop - start, 1) if meta.shape else 0
        with open(meta.file, "rb") as fh:
            fh.seek(meta.offset + start * row_bytes)
            if fh.readinto(memoryview(out.reshape(-1)).cast("B")) != out.nbytes:
                raise ValueError(f"{meta.file}: {name} is truncated")
        if meta.dtype == "BF16":  # the upper half of a float32
            return (out.astype(np.uint32) << 16).view(np.float32)
        return out

    def get_f32(self, name: str) -> np.ndarray:
        """One tensor as a float32 numpy array."""
        return self.get(name).float().numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)


def _read_header(path: Path) -> dict[str, Any]:
    return _read_header_at(path)[0]


def _read_header_at(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset where its data section starts."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n)), 8 + n


def row_chunks(shape: tuple[int, ...], itemsize: int = 4, max_bytes: int = 32 << 20) -> list[tuple[int, int]]:
    """Row ranges of a tensor so that each chunk stays under ``max_bytes`` (1-D tensors: one chunk)."""
    rows = shape[0] if shape else 1
    if len(shape) < 2:
        return [(0, rows)]
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    step = max(1, max_bytes // max(row_bytes, 1))
    return [(i, min(i + step, rows)) for i in range(0, rows, step)]


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _ITEMSIZE[self.dtype]


def plan_shards(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Split tensors (in order) into shards of at most ``max_shard_bytes`` (a bigger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


class StreamingSafetensorsWriter:
    """Write one safetensors file whose tensors arrive one by one, in the planned order.

    Writes through :class:`fileio.atomic.AtomicFile`: only :meth:`close` puts the file at ``path``, so an
    interrupted write leaves none there.
    """

    def __init__(
        self, path: Path, tensors: list[PlannedTensor], metadata: dict[str, str] | None = None
    ) -> None:
        self.path = Path(path)
        self._plan = list(tensors)
        self._next = 0
        self._done = 0  # bytes of the current tensor written so far
        header: dict[str, Any] = {}
        if metadata:
            header["__metadata__"] = metadata
        offset = 0
        for t in self._plan:
            header[t.name] = {
                "dtype": t.dtype,
                "shape": list(t.shape),
                "data_offsets": [offset, offset + t.nbytes],
            }
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
        self._file = AtomicFile(self.path, "wb")
        self._fh = self._file.fh
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)

    def write(self, name: str, tensor: Any) -> None:
        """Write the next planned tensor (a torch tensor in the planned dtype)."""
        planned = self._plan[self._next]
        if tuple(tensor.shape) != planned.shape:
            raise ValueError(f"{name}: got shape {tuple(tensor.shape)}, planned {planned.shape}")
        self.write_part(name, tensor)

    def write_part(self, name: str, rows: Any) -> None:
        """Append rows (first dimension) of the current tensor; the tensor is done when all bytes are in."""
        import torch

        planned = self._plan[self._next]
        if name != planned.name:
            raise ValueError(f"expected tensor {planned.name}, got {name}")
        if st_dtype_of(rows.dtype) != planned.dtype or tuple(rows.shape[1:]) != planned.shape[1:]:
            raise ValueError(
                f"{name}: got {tuple(rows.shape)} {rows.dtype}, planned {planned.shape} {planned.dtype}"
            )
        # A uint8 view gives the raw bytes for every dtype, bfloat16 included.
        data = rows.contiguous().view(-1).view(torch.uint8).numpy()
        self._fh.write(data.tobytes())
        self._done += data.nbytes
        if self._done > planned.nbytes:
            raise ValueError(f"{name}: more bytes than planned")
        if self._done == planned.nbytes:
            self._next += 1
            self._done = 0

    def close(self) -> None:
        if self._next != len(self._plan) or self._done:
            self.abort()
            raise ValueError(f"{self.path}: wrote {self._next} of {len(self._plan)} tensors")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()
