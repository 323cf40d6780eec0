"""The llama.cpp converter fallback: fetched from the llama-cpp-python sdist, used where our writer lacks the
architecture (StableLM here), compared with our writer on a Llama, and failing with clear messages.

The first slow test downloads the 76 MB sdist once into the user cache (``models.registry.cache_dir()``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_fixtures import make_adapter, make_base, needs_llama_cpp

from deploy import llamacpp_convert as lc

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.export", "--no-progress", "--no-ollama", *args],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=900, check=False,
    )


@pytest.fixture(scope="module")
def stablelm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random StableLM (an architecture our writer does not cover) with SmolLM2's tokenizer; the
    output embedding is scaled so that the q8_0 rule has decisive positions to judge."""
    import torch
    from tiny import make_tokenizer
    from transformers import AutoModelForCausalLM, StableLmConfig

    tok = make_tokenizer("smollm2")
    cfg = StableLmConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.05,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(10.0)
    path = tmp_path_factory.mktemp("tiny-stablelm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _fields(path: Path) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def _tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), np.asarray(t.data).tobytes())
            for t in reader.tensors}


def test_only_the_converter_is_extracted() -> None:
    keep = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
    assert lc._vendored_path(keep + "convert_hf_to_gguf.py") == "convert_hf_to_gguf.py"
    assert lc._vendored_path(keep + "conversion/stablelm.py") == "conversion/stablelm.py"
    assert lc._vendored_path(keep + "gguf-py/gguf/constants.py") == "gguf-py/gguf/constants.py"
    assert lc._vendored_path(keep + "models/templates/Kimi-K3.jinja") == "models/templates/Kimi-K3.jinja"
    for dropped in ("ggml/src/ggml.c", "src/llama.cpp", "gguf-py/tests/test_quants.py", "models/ggml-vocab-bert.gguf",
                    "convert_lora_to_gguf.py", "conversion/../../../etc/passwd"):
        assert lc._vendored_path(keep + dropped) is None, dropped
    assert lc._vendored_path("llama_cpp_python-0.3.36/llama_cpp/llama.py") is None


def test_version_is_the_installed_one_and_the_pin() -> None:
    pin = re.search(r"llama-cpp-python==([\w.]+)", (ROOT / "pyproject.toml").read_text())
    assert pin is not None and lc.pinned_version() == pin.group(1)
    assert lc.converter_dir("9.9.9").name == "llama-cpp-python-9.9.9"


def test_override_folder_must_hold_the_converter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lc.CONVERTER_ENV, str(tmp_path))
    with pytest.raises(lc.ConverterError, match="convert_hf_to_gguf.py"):
        lc.ensure_converter()


@pytest.mark.slow
def test_ours_refuses_an_unsupported_architecture(stablelm_dir: Path, tmp_path: Path) -> None:
    proc = _export("--base", str(stablelm_dir), "--out", str(tmp_path / "o"), "--converter", "ours")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "StableLmForCausalLM" in proc.stderr and "--converter auto" in proc.stderr


@needs_llama_cpp
@pytest.mark.slow
def test_auto_falls_back_for_stablelm_and_passes_parity(stablelm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    proc = _export("--base", str(stablelm_dir), "--out", str(out), "--quant", "f16,q8_0", "--name", "slm")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "falling back to llama.cpp's convert_hf_to_gguf.py" in proc.stdout
    parity = json.loads((out / "parity.json").read_text())
    assert parity["status"] == "passed", parity
    for q in ("f16", "q8_0"):
        entry = parity["files"][f"slm-{q}.gguf"]
        assert entry["status"] == "passed" and (entry["greedy_identical"] or q == "q8_0"), entry
        assert all(p["tokens_match"] for p in entry["prompts"])
        fields = _fields(out / f"slm-{q}.gguf")
        assert fields["general.architecture"] == "stablelm" and fields["general.name"] == "slm"
    assert parity["files"]["slm-q8_0.gguf"]["decisive_positions"] >= 8
    assert "FROM ./slm-q8_0.gguf" in (out / "Modelfile").read_text()
    assert (out / "merged" / "model.safetensors").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@needs_llama_cpp
@pytest.mark.slow
def test_adapter_is_merged_into_a_temp_folder_for_the_converter(stablelm_dir: Path, tmp_path: Path) -> None:
    """--no-merged with an adapter: the converter gets a temp merge (removed after), and the GGUF matches
    base + adapter in transformers."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(stablelm_dir)
    adapter = make_adapter(stablelm_dir, model, tmp_path / "adapter")
    out = tmp_path / "export"
    proc = _export("--adapter", str(adapter), "--out", str(out), "--quant", "f16", "--no-merged", "--name", "a")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    parity = json.loads((out / "parity.json").read_text())
    assert parity["status"] == "passed" and parity["files"]["a-f16.gguf"]["greedy_identical"], parity
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "a-f16.gguf", "parity.json"]


def _hub_style_tokenizer(folder: Path) -> None:
    """Rewrite tokenizer.json the way SmolLM2's Hub repo has it: plain byte-level BPE (no byte_fallback, a
    ByteLevel decoder). transformers rebuilds the packaged GGUF's tokenizer with byte_fallback and a
    SentencePiece-style decoder; encoding is the same either way (every byte has a byte-level token)."""
    tj_file = folder / "tokenizer.json"
    tj = json.loads(tj_file.read_text())
    tj["model"]["byte_fallback"] = False
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tj_file.write_text(json.dumps(tj, ensure_ascii=False))


# Keys both writers must agree on. Measured differences (0.3.36): ours also writes add_eos_token and
# eot_token_id; llama.cpp's also writes size_label, attention.key_length/value_length, add_space_prefix.
_SAME_KEYS = (
    "general.architecture", "llama.context_length", "llama.embedding_length", "llama.block_count",
    "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size", "general.file_type",
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
)


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_converter_matches_our_writer_on_llama(tmp_path: Path) -> None:
    base, _ = make_base(tmp_path / "base")
    _hub_style_tokenizer(base)
    for conv in ("ours", "llama.cpp"):
        proc = _export("--base", str(base), "--out", str(tmp_path / conv), "--quant", "f16,q8_0", "--no-merged",
                       "--converter", conv, "--name", "m")
        assert proc.returncode == 0, (conv, proc.stderr[-3000:])
        assert json.loads((tmp_path / conv / "parity.json").read_text())["status"] == "passed"
    for q in ("f16", "q8_0"):
        ours, theirs = tmp_path / "ours" / f"m-{q}.gguf", tmp_path / "llama.cpp" / f"m-{q}.gguf"
        # same tensor names, types, shapes and bytes (q/k rows permuted the same way)
        assert _tensors(ours) == _tensors(theirs)
        f_ours, f_theirs = _fields(ours), _fields(theirs)
        for key in _SAME_KEYS:
            assert f_ours.get(key) == f_theirs.get(key), (q, key)


@needs_llama_cpp
@pytest.mark.slow
def test_a_gguf_that_would_crash_llama_cpp_is_refused(tmp_path: Path) -> None:
    """llama.cpp's Llama converter reads the byte_fallback tokenizer as SentencePiece and llama.cpp aborts on
    loading the result; the export must say so and leave no GGUF behind (not die in the parity gate)."""
    base, _ = make_base(tmp_path / "base")
    out = tmp_path / "o"
    proc = _export("--base", str(base), "--out", str(out), "--quant", "f16", "--no-merged", "--converter", "llama.cpp")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: llama.cpp cannot load the GGUF") and "Traceback" not in proc.stderr
    assert "SentencePiece" in proc.stderr and "unordered_map::at" in proc.stderr
    assert not list(out.glob("*.gguf")) and not list(out.glob(".*"))


@pytest.mark.slow
def test_converter_failure_shows_its_stderr(stablelm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    for f in stablelm_dir.iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "config.json").unlink()
    cfg = json.loads((stablelm_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["NoSuchModelForCausalLM"]}))
    with pytest.raises(lc.ConverterError, match="no converter for this architecture") as err:
        lc.convert(folder, tmp_path / "x.gguf", "f16", log=lambda *_: None)
    assert "NoSuchModelForCausalLM is not supported" in str(err.value)
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*"))


@pytest.mark.slow
def test_download_failure_is_clear(tmp_path: Path) -> None:
    with pytest.raises(lc.ConverterError, match="could not download the llama-cpp-python 0.0.1") as err:
        lc.download_sdist("0.0.1", tmp_path)
    assert lc.CONVERTER_ENV in str(err.value)
