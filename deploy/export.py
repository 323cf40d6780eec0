"""Export a trained run: merged safetensors, GGUF files, a Modelfile and a parity report.

Usage::

    python -m deploy.export --run runs/react-20261122-203000 [--quant f16,q8_0,q4_k_m] [--name NAME] [--no-merged]
    python -m deploy.export --adapter path/to/adapter --base smollm2-135m-instruct [--out DIR]
    python -m deploy.export --base path/to/hf-folder --converter llama.cpp

Our streaming GGUF writer covers the architectures in ``deploy.gguf``; for any other one (``--converter auto``,
the default) the merged folder is converted by llama.cpp's own ``convert_hf_to_gguf.py`` instead
(:mod:`deploy.llamacpp_convert`), then the same parity gate and Modelfile follow. With ours, a folder on disk
(``merged/``, or the base when there is no adapter) is converted by :func:`deploy.convert.convert_folder`,
which reads weights with numpy and the tokenizer from its files; that vocabulary is used once
:func:`deploy.tokenizer_files.differences` finds transformers reading the files the same way (else
transformers' tokenizer gives it, and the log says why). The parity gate (torch) runs after, separately.

Writes ``<run>/export/`` (or ``--out``): ``merged/`` (unless ``--no-merged``), ``<name>-<quant>.gguf``,
``Modelfile``, ``parity.json``. Every file is written to a temp name and renamed, so an interrupted export
leaves nothing at a final path. Exit code 0 when every GGUF passed the parity gate (or it was skipped because
llama-cpp-python is missing, which is reported), 1 when a GGUF failed it, 2 for bad input.

Serve the merged folder with vLLM or TGI::

    vllm serve <out>/merged
    docker run -p 8080:80 -v <out>/merged:/model ghcr.io/huggingface/text-generation-inference --model-id /model
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.quantize import K_QUANTS, check_type
from fileio.atomic import sweep_stale, temp_dir, write_error
from models.generate import scenario_kind

DEFAULT_QUANTS = "f16,q8_0"
_PREFERENCE = (
    "q4_k_m",
    "q5_k_m",
    "q6_k",
    "q8_0",
    "q4_k_s",
    "q5_k_s",
    "q3_k_m",
    "q3_k_l",
    "q3_k_s",
    "q2_k",
    "bf16",
    "f16",
    "f32",
)  # which GGUF the Modelfile points at (smallest that passed)


@dataclass
class RunInfo:
    """What the export needs from a run folder. Missing keys are fine; everything has a fallback."""

    adapter_dir: Path | None
    base: str | None = None
    scenario: str | None = None
    system_prompt: str | None = None
    name: str | None = None


def _get(cfg: dict[str, Any], *paths: str) -> Any:
    for path in paths:
        node: Any = cfg
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node not in (None, ""):
            return node
    return None


def read_run(run_dir: Path) -> RunInfo:
    """Read ``run/adapter`` and ``run/config.yaml`` (keys ``model`` / ``model.name``, ``scenario`` /
    ``run.scenario``, ``system_prompt`` / ``data.system_prompt``; all optional)."""
    import yaml

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{adapter}/adapter_config.json: missing; has training finished for this run?"
        )
    cfg: dict[str, Any] = {}
    cfg_file = run_dir / "config.yaml"
    if cfg_file.is_file():
        try:
            loaded = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{cfg_file}{line}: invalid YAML") from exc
        cfg = loaded if isinstance(loaded, dict) else {}
    model = _get(cfg, "model.name", "model")
    scenario = _get(cfg, "scenario", "run.scenario") or run_dir.name.split("-")[0]
    system = _get(cfg, "system_prompt", "data.system_prompt")
    if not isinstance(system, str):
        system = trained_system_prompt(run_dir / "data" / "train.jsonl")
    return RunInfo(
        adapter,
        base=model if isinstance(model, str) else None,
        scenario=str(scenario),
        system_prompt=system if isinstance(system, str) else None,
        name=run_dir.name,
    )


def trained_system_prompt(train_jsonl: Path) -> str | None:
    """The system message every training row started with (a character card, the ReAct instructions), if one
    was shared by all rows; ``None`` when rows differ or have none."""
    import json

    shared: str | None = None
    if not train_jsonl.is_file():
        return None
    with train_jsonl.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            messages = row.get("messages") or row.get("prompt") or [{}]  # preference rows keep it in the prompt
            first = messages[0]
            if first.get("role") != "system" or (shared is not None and first.get("content") != shared):
                return None
            shared = first.get("content")
    return shared


def default_system_prompt(kind: str | None) -> str | None:
    if kind == "react":
        from data_prep.react import react_system_prompt

        return react_system_prompt()
    return None


def safe_name(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-") or "model"


@dataclass
class ExportPlan:
    out_dir: Path
    name: str
    quants: list[str]
    merged: bool
    base_dir: Path
    adapter_dir: Path | None
    scenario: str | None
    system_prompt: str | None
    verify: bool = True
    lora_gguf: bool = False
    ollama: bool = True
    progress: bool = True
    converter: str = "auto"  # auto (ours, llama.cpp's where ours lacks the architecture) | ours | llama.cpp


CONVERTERS = ("auto", "ours", "llama.cpp")


@dataclass
class ExportResult:
    """What ``run_export`` did: the process exit code and, when a Modelfile was written, the files
    (``gguf``: type -> path, ``modelfile``, ``failed``: types that failed the gate); ``main`` prints them."""

    code: int
    results: dict[str, Any] = field(default_factory=dict)


def check_disk(out_dir: Path, need: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    if free < need * 1.1:
        raise RuntimeError(
            f"{out_dir}: needs about {need / 1e9:.2f} GB, only {free / 1e9:.2f} GB free; "
            "free some space or pass --out on another disk"
        )


def run_export(plan: ExportPlan, log: Any = print) -> ExportResult:
    """Do the export; returns the process exit code (0 ok, 1 parity failure) and the files written."""
    from transformers import AutoTokenizer

    from deploy.lora import LoraAdapter
    from deploy.merge import MergeSource

    for stale in sweep_stale(plan.out_dir):  # an earlier export killed mid-write left these
        log(f"removed {stale.name}, left by an interrupted export")
    adapter = LoraAdapter.load(plan.adapter_dir) if plan.adapter_dir else None
    source = MergeSource(plan.base_dir, adapter)
    tok_dir = _tokenizer_dir(plan)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    config = source.merged_config()
    names = source.names()
    vocab: Any
    if _choose_converter(plan, config, log) == "ours":
        check_disk(plan.out_dir, _needed_bytes(plan, source, config, names))
        weights = _gguf_weights(plan, source, config, names, tok_dir, log)
        vocab = _vocab(tokenizer, tok_dir, config, log)
        written = _write_ggufs(plan, _our_writer(plan, weights, vocab), log)
    else:
        written, vocab = _convert_with_llamacpp(plan, source, names, tok_dir, tokenizer, log)
    lora_pair = _write_lora_pair(plan, adapter, tokenizer, log) if plan.lora_gguf else None
    failed, lora_pair = _parity_gate(plan, written, tokenizer, lora_pair, log)

    ok = [q for q in written if q not in failed]
    chosen = next((q for q in _PREFERENCE if q in ok), None)
    if chosen is None:
        log("no GGUF passed the parity gate; no Modelfile written")
        return ExportResult(1)
    modelfile = _write_modelfiles(plan, tokenizer, vocab, written[chosen], lora_pair, log)
    if plan.ollama:
        from deploy.modelfile import ollama_create

        log(ollama_create(safe_name(plan.name), modelfile))
    results = {
        "gguf": {q: str(p) for q, p in written.items()},
        "modelfile": str(modelfile),
        "failed": failed,
    }
    return ExportResult(1 if failed else 0, results)


@dataclass
class _Weights:
    """The tensors the GGUFs are written from: a model folder (``merged/``, or the base when there is no
    adapter), converted without torch by :func:`deploy.convert.convert_folder`, or base + adapter streamed."""

    config: dict[str, Any]
    names: list[str]
    shape_of: Callable[[str], tuple[int, ...]]
    read_rows: Callable[[str, int, int], Any]
    folder: Path | None = None


def _tokenizer_dir(plan: ExportPlan) -> Path:
    """The adapter's tokenizer when it saved one (training may add tokens or a template), else the base's."""
    if plan.adapter_dir and (plan.adapter_dir / "tokenizer_config.json").is_file():
        return plan.adapter_dir
    return plan.base_dir


def _needed_bytes(plan: ExportPlan, source: Any, config: dict[str, Any], names: list[str]) -> int:
    """Disk the export will take: the merged folder, every GGUF, and the f16 a K-quant is made from."""
    from deploy.gguf import estimate_size

    need = source.base.total_bytes() if plan.merged else 0
    for q in plan.quants:
        need += estimate_size(names, source.shape, config, q)
    if any(q in K_QUANTS for q in plan.quants) and "f16" not in plan.quants:
        need += estimate_size(names, source.shape, config, "f16")
    return int(need)


def _gguf_weights(
    plan: ExportPlan, source: Any, config: dict[str, Any], names: list[str], tok_dir: Path, log: Any
) -> _Weights:
    """Write ``merged/`` and read the GGUF tensors back from it, or (``--no-merged``) the base folder when
    there is no adapter, else stream base + adapter."""
    if not plan.merged:
        folder = plan.base_dir if source.adapter is None else None
        return _Weights(config, names, source.shape, source.get_rows, folder)
    from deploy.merge import merge_to_folder
    from deploy.safetensors_io import TensorSource

    merged_dir = merge_to_folder(
        source, plan.out_dir / "merged", tokenizer_dirs=(tok_dir,), progress=plan.progress
    )
    log(f"merged model: {merged_dir}")
    reader = TensorSource(merged_dir)
    return _Weights(config, reader.names(), lambda n: reader.meta(n).shape, reader.get_rows, merged_dir)


def _vocab(tokenizer: Any, tok_dir: Path, config: dict[str, Any], log: Any) -> Any:
    """The GGUF vocabulary from the tokenizer's files (torch-free, as ``python -m deploy.convert`` reads
    them), after checking that transformers reads those files the same way; else from transformers' own."""
    from deploy.tokenizer_files import TokenizerFiles, differences
    from deploy.tokenizer_gguf import build_vocab

    try:
        files = TokenizerFiles.load(tok_dir)
        differ = differences(tokenizer, files)
    except (OSError, ValueError) as exc:
        files, differ = None, [str(exc)]
    if files is None or differ:
        log(f"tokenizer: transformers reads {tok_dir} differently from its files ({'; '.join(differ)[:300]}); "
            "the GGUF vocabulary comes from transformers' tokenizer")
        return build_vocab(tokenizer, config.get("vocab_size"))
    return build_vocab(files, config.get("vocab_size"))


def _our_writer(plan: ExportPlan, weights: _Weights, vocab: Any) -> Callable[[Path, str], None]:
    """``write(path, outtype)`` with our streaming writer: the torch-free folder converter when the weights
    are a folder on disk, else streaming base + adapter."""
    from deploy.convert import convert_folder
    from deploy.gguf import write_gguf

    def write(path: Path, outtype: str) -> None:
        if weights.folder is not None:
            convert_folder(weights.folder, path, outtype, model_name=plan.name, config=weights.config,
                           vocab=vocab, progress=plan.progress)
            return
        write_gguf(path, config=weights.config, vocab=vocab, names=weights.names, shape_of=weights.shape_of,
                   read_rows=weights.read_rows, outtype=outtype, model_name=plan.name, progress=plan.progress)

    return write


def _write_ggufs(plan: ExportPlan, write: Callable[[Path, str], None], log: Any) -> dict[str, Path]:
    """One GGUF per requested type with ``write(path, outtype)`` (f32/f16/bf16/q8_0); K-quants are made
    from the f16 (a temp one unless f16 came first)."""
    from deploy.quantize import quantize_k

    written: dict[str, Path] = {}
    f16_tmp: Path | None = None

    try:
        for q in plan.quants:
            path = plan.out_dir / f"{plan.name}-{q}.gguf"
            if q in K_QUANTS:
                base16 = written.get("f16")
                if base16 is None:
                    f16_tmp = plan.out_dir / f".{plan.name}-f16-for-quant.gguf"
                    write(f16_tmp, "f16")
                    base16 = f16_tmp
                quantize_k(base16, path, q)
            else:
                write(path, q)
            written[q] = path
            log(f"gguf {q}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    finally:
        if f16_tmp is not None:
            f16_tmp.unlink(missing_ok=True)
    return written


def _choose_converter(plan: ExportPlan, config: dict[str, Any], log: Any) -> str:
    """``ours`` or ``llama.cpp``: auto falls back only where our writer lacks the architecture."""
    from deploy.gguf import ModelHParams, UnsupportedArchitecture

    if plan.converter == "llama.cpp":
        return "llama.cpp"
    try:
        ModelHParams.from_config(config)
    except UnsupportedArchitecture as exc:
        if plan.converter == "ours":
            raise ValueError(f"{exc}; --converter auto falls back to llama.cpp's convert_hf_to_gguf.py") from exc
        log(f"converter: our GGUF writer does not cover {config.get('architectures')}; "
            "falling back to llama.cpp's convert_hf_to_gguf.py")
        return "llama.cpp"
    return "ours"


def _convert_with_llamacpp(
    plan: ExportPlan, source: Any, names: list[str], tok_dir: Path, tokenizer: Any, log: Any
) -> tuple[dict[str, Path], Any]:
    """Every GGUF by llama.cpp's converter from an HF folder; returns them and the Modelfile's token facts."""
    from deploy import llamacpp_convert

    if plan.lora_gguf:
        raise ValueError("--lora-gguf needs our GGUF writer, which does not cover this architecture; "
                         "export merged GGUFs (drop --lora-gguf)")
    check_disk(plan.out_dir, _converter_needed_bytes(plan, source, names))
    conv = llamacpp_convert.ensure_converter(log=log)  # before merging: a failed download costs nothing

    with _hf_folder(plan, source, tok_dir, log) as hf_dir:

        def write(path: Path, outtype: str) -> None:
            llamacpp_convert.convert(hf_dir, path, outtype, converter=conv, model_name=plan.name, log=log)

        written = _write_ggufs(plan, write, log)
    return written, llamacpp_convert.token_facts(next(iter(written.values())), tokenizer)


@contextlib.contextmanager
def _hf_folder(plan: ExportPlan, source: Any, tok_dir: Path, log: Any) -> Iterator[Path]:
    """An HF folder of the merged model: ``merged/``, the base itself when there is no adapter and
    ``--no-merged``, else a temp merge that is removed afterwards."""
    from deploy.merge import merge_to_folder

    if plan.merged:
        merged = merge_to_folder(source, plan.out_dir / "merged", tokenizer_dirs=(tok_dir,), progress=plan.progress)
        log(f"merged model: {merged}")
        yield merged
    elif source.adapter is None:
        yield plan.base_dir
    else:
        tmp = temp_dir(plan.out_dir, "merged-for-convert")
        try:
            yield merge_to_folder(source, tmp / "merged", tokenizer_dirs=(tok_dir,), progress=plan.progress)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _converter_needed_bytes(plan: ExportPlan, source: Any, names: list[str]) -> int:
    """Disk for the llama.cpp path: the merged folder (kept or temp) and every GGUF, from parameter counts."""
    import math

    n = sum(math.prod(source.shape(name)) for name in names)
    per_weight = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}
    need = source.base.total_bytes() if (plan.merged or source.adapter is not None) else 0
    need += sum(n * per_weight.get(q, 0.8) for q in plan.quants)  # K-quants: under 6.5 bits per weight
    if any(q in K_QUANTS for q in plan.quants) and "f16" not in plan.quants:
        need += 2 * n
    return int(need)


def _write_lora_pair(plan: ExportPlan, adapter: Any, tokenizer: Any, log: Any) -> tuple[Path, Path]:
    """``--lora-gguf``: the base as an f16 GGUF plus the adapter alone as a LoRA GGUF."""
    if adapter is None:
        raise ValueError("--lora-gguf needs an adapter (--run or --adapter)")
    from deploy.gguf import write_gguf, write_lora_gguf
    from deploy.merge import MergeSource
    from deploy.tokenizer_gguf import build_vocab

    base_src = MergeSource(plan.base_dir)
    base_gguf = plan.out_dir / f"{plan.name}-base-f16.gguf"
    write_gguf(
        base_gguf,
        config=base_src.config,
        vocab=build_vocab(tokenizer, base_src.config.get("vocab_size")),
        names=base_src.names(),
        shape_of=base_src.shape,
        read_rows=base_src.get_rows,
        outtype="f16",
        model_name=f"{plan.name}-base",
        progress=plan.progress,
    )
    lora_gguf = write_lora_gguf(
        plan.out_dir / f"{plan.name}-lora.gguf",
        adapter=adapter,
        config=base_src.config,
        model_name=f"{plan.name}-lora",
    )
    log(f"lora gguf: {lora_gguf} on {base_gguf}")
    return base_gguf, lora_gguf


def _parity_gate(
    plan: ExportPlan,
    written: dict[str, Path],
    tokenizer: Any,
    lora_pair: tuple[Path, Path] | None,
    log: Any,
) -> tuple[list[str], tuple[Path, Path] | None]:
    """Check every GGUF (and the LoRA pair) and write ``parity.json``; returns the types that failed and
    the LoRA pair, or ``None`` when it failed (no Modelfile.adapter then)."""
    from deploy import verify

    parity_file = plan.out_dir / "parity.json"
    if not plan.verify:
        verify.record(
            [
                verify.ParityResult(p.name, q, "skipped", reason="--no-verify was given")
                for q, p in written.items()
            ],
            parity_file,
        )
        log("parity: skipped (--no-verify)")
        return [], lora_pair
    model = verify.load_reference(plan.base_dir, plan.adapter_dir)
    results = []
    failed: list[str] = []
    for q, path in written.items():
        res = verify.compare(path, q, model, tokenizer)
        results.append(res)
        log(_parity_line(q, res))
        if res.status == "failed":
            failed.append(q)
    if lora_pair is not None:
        res = verify.compare(lora_pair[0], "f16", model, tokenizer, lora_path=lora_pair[1])
        res.gguf = lora_pair[1].name
        log(f"parity lora (f16 base + adapter): {res.status.upper()} {res.reason}".rstrip())
        results.append(res)
        if res.status == "failed":
            lora_pair = None
    verify.record(results, parity_file)
    return failed, lora_pair


def _parity_line(q: str, res: Any) -> str:
    detail = (
        f"max|dlogit|={res.max_abs_logit_diff:.3g} greedy_identical={res.greedy_identical} "
        f"top1={res.top1_agreement} on {res.decisive_positions} decisive positions {res.note}"
        if res.status != "skipped"
        else ""
    )
    return f"parity {q}: {res.status.upper()} {detail} {res.reason}".rstrip()


def _write_modelfiles(
    plan: ExportPlan,
    tokenizer: Any,
    vocab: Any,
    chosen: Path,
    lora_pair: tuple[Path, Path] | None,
    log: Any,
) -> Path:
    """``Modelfile`` FROM the chosen GGUF and, with a LoRA pair that passed, ``Modelfile.adapter``."""
    from deploy.modelfile import build_modelfile, write_modelfile

    kind = scenario_kind(plan.scenario)
    system = plan.system_prompt or default_system_prompt(kind)

    def spec_for(gguf_name: str) -> Any:
        return build_modelfile(
            tokenizer,
            gguf_name,
            add_bos=vocab.add_bos,
            end_of_turn=vocab.end_of_turn,
            system=system,
            scenario=kind,
        )

    modelfile = write_modelfile(spec_for(chosen.name), plan.out_dir / "Modelfile")
    log(f"Modelfile: {modelfile} (FROM {chosen.name})")
    if lora_pair is not None:
        spec_a = spec_for(lora_pair[0].name)
        spec_a.adapter = lora_pair[1].name
        log(f"Modelfile.adapter: {write_modelfile(spec_a, plan.out_dir / 'Modelfile.adapter')}")
    return modelfile


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="run folder (reads run/adapter and run/config.yaml)")
    p.add_argument("--adapter", type=Path, help="PEFT adapter folder (instead of --run)")
    p.add_argument("--base", help="base model: registry name, Hub id or local folder (16-bit weights)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN/export or ADAPTER/../export)")
    p.add_argument(
        "--quant",
        default=DEFAULT_QUANTS,
        help=f"comma list of GGUF types (default {DEFAULT_QUANTS}); "
        "f32,f16,bf16,q8_0 are written directly, K-quants (q4_k_m, ...) need llama-cpp-python",
    )
    p.add_argument("--name", help="model name for files and ollama (default: the run folder name)")
    p.add_argument(
        "--no-merged", action="store_true", help="stream base+adapter into the GGUF; no merged/ folder"
    )
    p.add_argument("--scenario", help="react | roleplay | qa (sampling params and default system prompt)")
    p.add_argument("--system", help="system prompt for the Modelfile (default: the run's)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity gate (reported as skipped)")
    p.add_argument(
        "--lora-gguf",
        action="store_true",
        help="also write a LoRA-only GGUF + base f16 GGUF and Modelfile.adapter (Ollama ADAPTER line)",
    )
    p.add_argument(
        "--converter",
        choices=CONVERTERS,
        default="auto",
        help="GGUF converter: ours (streaming), llama.cpp (its convert_hf_to_gguf.py, fetched once from the "
        "llama-cpp-python source), auto (default: ours, llama.cpp's for architectures ours lacks)",
    )
    p.add_argument("--no-ollama", action="store_true", help="do not run ollama create even if ollama exists")
    p.add_argument(
        "--allow-pickle", action="store_true",
        help="accept pickle-only weights (pytorch_model.bin, adapter_model.bin; unpickling can run code): "
        "they are converted to safetensors under OUT/from-pickle first",
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def build_plan(args: argparse.Namespace) -> ExportPlan:
    from deploy.lora import LoraAdapter
    from deploy.merge import resolve_base

    if args.run is None and args.adapter is None and args.base is None:
        raise ValueError(
            "pass --run RUN_DIR, or --adapter DIR [--base NAME|PATH], or --base to export a base model"
        )
    if args.run is not None:
        info = read_run(args.run)
        out = args.out or args.run / "export"
    else:
        info = RunInfo(args.adapter, name=(args.adapter.resolve().parent.name if args.adapter else None))
        if args.adapter is not None and not (args.adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"{args.adapter}/adapter_config.json: missing; pass a PEFT adapter folder"
            )
        out = args.out or ((args.adapter.resolve().parent / "export") if args.adapter else Path("export"))
    quants = [check_type(q) for q in str(args.quant).split(",") if q.strip()]
    if not quants:
        raise ValueError("--quant: give at least one type")
    k_quants = [q for q in quants if q in K_QUANTS]
    if k_quants:
        from deploy.llamacpp import llama_cpp_available

        ok, why = llama_cpp_available()
        if not ok:
            raise RuntimeError(f"--quant {','.join(k_quants)} uses llama.cpp's quantizer: {why}")
    adapter_dir = info.adapter_dir
    if adapter_dir is not None:
        adapter_dir = _safe_weights(adapter_dir, out / "from-pickle" / "adapter", args.allow_pickle)
        adapter = LoraAdapter.load(adapter_dir)
        # The adapter records the base it was trained on; config.yaml's model is the fallback.
        base_dir = resolve_base(adapter, args.base or (None if adapter.base_model else info.base))
    else:
        from models.registry import resolve_source

        base_dir = Path(resolve_source(args.base))
    base_dir = _safe_weights(base_dir, out / "from-pickle" / "base", args.allow_pickle)
    name = safe_name(args.name or info.name or base_dir.name)
    system_prompt = args.system or info.system_prompt
    if system_prompt:
        from deploy.modelfile import check_system_prompt

        check_system_prompt(system_prompt)  # before hours of converting, not after
    return ExportPlan(
        out_dir=out,
        name=name,
        quants=list(dict.fromkeys(quants)),
        merged=not args.no_merged,
        base_dir=base_dir,
        adapter_dir=adapter_dir,
        scenario=args.scenario or info.scenario,
        system_prompt=system_prompt,
        verify=not args.no_verify,
        ollama=not args.no_ollama,
        lora_gguf=args.lora_gguf,
        progress=not args.no_progress,
        converter=args.converter,
    )


def _safe_weights(folder: Path, converted: Path, allow_pickle: bool) -> Path:
    """``folder`` itself when its weights are safetensors; a pickle-only folder is refused, or with
    ``--allow-pickle`` converted once to safetensors at ``converted`` (the export reads safetensors only)."""
    from models.loading import UnsafeWeightsError, check_weights, safetensors_copy

    if not folder.is_dir():
        return folder
    try:
        check_weights(folder)
    except UnsafeWeightsError:
        if not allow_pickle:
            raise
        print(f"--allow-pickle: converting {folder} to safetensors in {converted}", file=sys.stderr)
        return safetensors_copy(folder, converted)
    return folder


def main(argv: list[str] | None = None) -> int:
    from models.quiet import quiet_dependency_noise

    quiet_dependency_noise()
    args = _parse(argv)
    plan = None
    try:
        plan = build_plan(args)
        result = run_export(plan)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk mid-write: one line; atomic writes left no partial file
        print(f"error: {write_error(exc, plan.out_dir if plan else args.out)}", file=sys.stderr)
        return 2
    if result.results:
        print(json.dumps(result.results, indent=2))
    return result.code


if __name__ == "__main__":
    sys.exit(main())
