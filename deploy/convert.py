"""A Hugging Face model folder to GGUF without torch or transformers: ``python -m deploy.convert``.

Usage (the arguments of llama.cpp's ``convert_hf_to_gguf.py``, for the architectures ``deploy.gguf`` covers)::

    python -m deploy.convert runs/<run>/export/merged --outfile model-f16.gguf --outtype f16 [--model-name NAME]

Weights are read with plain file reads (:meth:`deploy.safetensors_io.TensorSource.read_rows`, numpy), the
tokenizer from ``tokenizer.json`` / ``tokenizer_config.json`` / ``chat_template.jinja`` with the ``tokenizers``
library and jinja2 (:class:`deploy.tokenizer_files.TokenizerFiles`), then the streaming writer of
:mod:`deploy.gguf` writes the file atomically. The process holds numpy, gguf, tokenizers and jinja2, and
about one 32 MB chunk of weights: no torch (about 330 MB of imports in llama.cpp's converter and in
transformers). ``python -m deploy.export`` uses :func:`convert_folder` for the merged folder -> GGUF step.

Exit code 0 on success, 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deploy.gguf import DIRECT_TYPES, GGUFResult, ModelHParams, write_gguf
from deploy.safetensors_io import TensorSource
from deploy.tokenizer_files import TokenizerFiles
from deploy.tokenizer_gguf import GGUFVocab, build_vocab


def read_config(model_dir: Path) -> dict[str, Any]:
    cfg_file = Path(model_dir) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: missing; pass a Hugging Face model folder")
    config: dict[str, Any] = json.loads(cfg_file.read_text(encoding="utf-8"))
    return config


def folder_vocab(tokenizer_dir: Path, vocab_size: int | None) -> GGUFVocab:
    """The GGUF vocabulary (tokens, special tokens, chat template) from a tokenizer folder's files."""
    return build_vocab(TokenizerFiles.load(tokenizer_dir), vocab_size)


def convert_folder(
    model_dir: Path,
    out_path: Path,
    outtype: str = "f16",
    *,
    model_name: str | None = None,
    config: dict[str, Any] | None = None,
    vocab: GGUFVocab | None = None,
    progress: bool = True,
) -> GGUFResult:
    """Write ``model_dir`` (safetensors + config + tokenizer) as a GGUF of ``outtype`` to ``out_path``.

    ``config`` / ``vocab`` replace what the folder's files say (the exporter passes a vocab it checked).
    """
    model_dir = Path(model_dir)
    config = config if config is not None else read_config(model_dir)
    ModelHParams.from_config(config)  # an architecture we do not cover fails before the tokenizer is read
    vocab = vocab if vocab is not None else folder_vocab(model_dir, config.get("vocab_size"))
    reader = TensorSource(model_dir)
    return write_gguf(
        Path(out_path),
        config=config,
        vocab=vocab,
        names=reader.names(),
        shape_of=lambda name: reader.meta(name).shape,
        read_rows=reader.read_rows,
        outtype=outtype,
        model_name=model_name,
        progress=progress,
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="Hugging Face model folder (config.json, safetensors, tokenizer)")
    p.add_argument("--outfile", type=Path, required=True, help="the GGUF file to write")
    p.add_argument("--outtype", default="f16", choices=sorted(DIRECT_TYPES), help="tensor type (default f16)")
    p.add_argument("--model-name", help="general.name (default: the output file's stem)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        result = convert_folder(args.model, args.outfile, args.outtype, model_name=args.model_name,
                                progress=not args.no_progress)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{result.path}: {result.n_tensors} tensors, {result.nbytes / 1e6:.1f} MB ({result.qtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
