"""GGUF files from tiny Llama and Qwen2 models (+ LoRA), checked in llama.cpp by the parity gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from deploy_fixtures import base_and_adapter, needs_llama_cpp
from transformers import AutoTokenizer

from deploy import verify
from deploy.gguf import ModelHParams, permute_rotary, write_gguf
from deploy.lora import LoraAdapter
from deploy.merge import MergeSource
from deploy.tokenizer_gguf import build_vocab, detect_pre_tokenizer

CASES = {
    "llama": ("smollm2", "llama"),
    "qwen2": ("qwen2_5", "qwen2"),
    "llama3": ("llama3", "llama"),
    "mistral": ("mistral", "llama"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def tiny_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Two tiny models per case: plain init (greedy decoding is stable under f16 rounding) and one with a
    10x output embedding (decisive next-token margins for the quantized rule)."""
    template, family = CASES[request.param]
    root = tmp_path_factory.mktemp(f"gguf-{request.param}")
    plain = base_and_adapter(root / "plain", template, family, logit_scale=1.0, use_rslora=True)
    sharp = base_and_adapter(root / "sharp", template, family, logit_scale=10.0, use_rslora=True)
    return request.param, plain, sharp, root


@pytest.fixture(scope="module")
def llama_plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("gguf-llama-plain")
    base_dir, adapter_dir = base_and_adapter(root, "smollm2", "llama", logit_scale=1.0, use_rslora=True)
    return base_dir, adapter_dir, root


def _export(base_dir: Path, adapter_dir: Path, out: Path, outtype: str, perturb: str | None = None) -> Path:
    source = MergeSource(base_dir, LoraAdapter.load(adapter_dir))
    tok = AutoTokenizer.from_pretrained(adapter_dir)

    def get_f32(name: str) -> np.ndarray:
        data = source.get(name).float().numpy()
        if name == perturb:
            data = data[::-1].copy()  # a plausible bug: rows in the wrong order
        return data

    cfg = source.merged_config()
    write_gguf(
        out,
        config=cfg,
        vocab=build_vocab(tok, cfg["vocab_size"]),
        names=source.names(),
        shape_of=source.shape,
        get_f32=get_f32,
        outtype=outtype,
        progress=False,
    )
    return out


@needs_llama_cpp
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_parity_gate_passes(tiny_run, outtype: str) -> None:
    case, plain, sharp, root = tiny_run
    base_dir, adapter_dir = plain if outtype == "f16" else sharp
    path = _export(base_dir, adapter_dir, root / f"m-{outtype}.gguf", outtype)
    model = verify.load_reference(base_dir, adapter_dir)
    res = verify.compare(path, outtype, model, AutoTokenizer.from_pretrained(adapter_dir))
    assert res.status == "passed", res.reason
    assert all(p.tokens_match for p in res.prompts)
    if outtype == "f16":
        # Identical greedy continuations, except a split where HF's own top-2 margin is a rounding-level tie
        # (random tiny models have many); the gate then still demands HF's top-1 at every non-tie position.
        assert res.greedy_identical or all(
            p.greedy_identical or (p.divergence_margin or 1.0) < 0.01 for p in res.prompts
        ), res.note
        assert res.max_abs_logit_diff is not None and res.max_abs_logit_diff < 0.1
    else:
        assert res.decisive_positions >= 8 and (res.top1_agreement or 0) >= 0.9


@needs_llama_cpp
def test_parity_gate_catches_a_broken_tensor_and_renames(llama_plain) -> None:
    base_dir, adapter_dir, root = llama_plain
    out = root / "broken"
    out.mkdir(exist_ok=True)
    path = _export(
        base_dir, adapter_dir, out / "m-f16.gguf", "f16", perturb="model.layers.0.self_attn.k_proj.weight"
    )
    model = verify.load_reference(base_dir, adapter_dir)
    res = verify.compare(path, "f16", model, AutoTokenizer.from_pretrained(adapter_dir))
    assert res.status == "failed" and "logit diff" in res.reason
    verify.record([res], out / "parity.json")
    assert not path.exists() and (out / "m-f16.failed.gguf").is_file()
    data = json.loads((out / "parity.json").read_text())
    assert data["status"] == "failed" and data["files"]["m-f16.gguf"]["renamed_to"] == "m-f16.failed.gguf"


def test_gguf_metadata_and_layout(tiny_run) -> None:
    case, (base_dir, adapter_dir), _, root = tiny_run
    path = _export(base_dir, adapter_dir, root / "meta-f32.gguf", "f32")
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    cfg = json.loads((base_dir / "config.json").read_text())
    arch = "qwen2" if case == "qwen2" else "llama"
    assert fields["general.architecture"] == arch
    # transformers loads the qwen2 tiny tokenizer as Qwen2Tokenizer, which brings the Qwen2 regex.
    assert fields["tokenizer.ggml.pre"] == ("qwen2" if case == "qwen2" else "smollm")
    assert fields["tokenizer.ggml.model"] == "gpt2" and "tokenizer.ggml.scores" not in fields  # BPE
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields[f"{arch}.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert fields[f"{arch}.context_length"] == cfg["max_position_embeddings"]
    assert len(fields["tokenizer.ggml.tokens"]) == cfg["vocab_size"]
    types = fields["tokenizer.ggml.token_type"]
    assert types[tok.convert_tokens_to_ids("<|im_end|>")] == gguf.TokenType.CONTROL
    assert types[tok.convert_tokens_to_ids("hello")] == gguf.TokenType.NORMAL
    tensors = {t.name: t for t in reader.tensors}
    assert ("output.weight" in tensors) == (not cfg["tie_word_embeddings"])
    source = MergeSource(base_dir, LoraAdapter.load(adapter_dir))
    q_hf = source.get("model.layers.1.self_attn.q_proj.weight").float().numpy()
    q_gguf = np.asarray(tensors["blk.1.attn_q.weight"].data).reshape(q_hf.shape)
    hp = ModelHParams.from_config(cfg)
    expected = permute_rotary(q_hf, hp.n_head) if arch == "llama" else q_hf  # Qwen2 keeps the NeoX layout
    np.testing.assert_allclose(q_gguf, expected, rtol=1e-6, atol=1e-7)


def test_pre_tokenizer_names() -> None:
    llama3_rx = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    qwen2_rx = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )

    def split(rx: str) -> dict:
        return {
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated", "invert": False},
                    {
                        "type": "ByteLevel",
                        "add_prefix_space": False,
                        "trim_offsets": False,
                        "use_regex": False,
                    },
                ],
            }
        }

    assert detect_pre_tokenizer(split(llama3_rx)) == "llama-bpe"
    assert detect_pre_tokenizer(split(qwen2_rx)) == "qwen2"
    smol = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "use_regex": True},
            ],
        }
    }
    assert detect_pre_tokenizer(smol) == "smollm"
    gpt2 = {"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}, "model": {"vocab": {"\u01202019": 5}}}
    assert detect_pre_tokenizer(gpt2) == "gpt-2"
    with pytest.raises(ValueError, match="unrecognized pre-tokenizer"):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}})


def test_permute_rotary_is_a_per_head_row_permutation() -> None:
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of dim 8
    p = permute_rotary(w, 2)
    assert sorted(map(tuple, p)) == sorted(map(tuple, w))
    # Head 0: HF rows [0..3 | 4..7] (two halves) become interleaved pairs 0,4,1,5,2,6,3,7.
    assert [int(r[0]) // 3 for r in p[:8]] == [0, 4, 1, 5, 2, 6, 3, 7]


def test_gate_reports_skipped_without_llama_cpp(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"
        "from pathlib import Path\nfrom deploy import verify\n"
        "r = verify.compare(Path('x.gguf'), 'f16', None, None)\n"
        "print(r.status, '|', r.reason)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    status, reason = out.split("|", 1)
    assert status.strip() == "skipped" and "pip install" in reason


@needs_llama_cpp
def test_k_quant_through_llama_cpp(llama_plain) -> None:
    from deploy.quantize import quantize_k

    base_dir, adapter_dir, root = llama_plain
    src = _export(base_dir, adapter_dir, root / "kq-f16.gguf", "f16")
    dst = quantize_k(src, root / "kq-q4_k_m.gguf", "q4_k_m")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(dst).fields.items()}
    assert fields["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert not list(root.glob(".kq-q4_k_m.*.tmp.gguf"))


@needs_llama_cpp
@pytest.mark.parametrize("case", ["llama", "qwen2"])
def test_lora_only_gguf_on_a_base_gguf(tmp_path: Path, case: str) -> None:
    """LoRA GGUF (scales folded into lora_b, rank pattern + rsLoRA) on an f16 base == PEFT in transformers."""
    from deploy.gguf import write_lora_gguf

    template, family = CASES[case]
    base_dir, adapter_dir = base_and_adapter(
        tmp_path, template, family, use_rslora=True, rank_pattern={"q_proj": 8}
    )
    base = MergeSource(base_dir)
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    vocab = build_vocab(tok, base.config["vocab_size"])
    base_gguf = write_gguf(
        tmp_path / "base-f16.gguf",
        config=base.config,
        vocab=vocab,
        names=base.names(),
        shape_of=base.shape,
        read_rows=base.get_rows,
        outtype="f16",
        progress=False,
    ).path
    lora = write_lora_gguf(tmp_path / "lora.gguf", adapter=LoraAdapter.load(adapter_dir), config=base.config)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(lora).fields.items()}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    res = verify.compare(base_gguf, "f16", verify.load_reference(base_dir, adapter_dir), tok, lora_path=lora)
    assert res.status == "passed", res.reason
    without = verify.compare(base_gguf, "f16", verify.load_reference(base_dir, adapter_dir), tok)
    assert without.status == "failed"  # the adapter really changes the model


def test_lora_only_gguf_refuses_dora(tmp_path: Path) -> None:
    from deploy.gguf import write_lora_gguf

    base_dir, adapter_dir = base_and_adapter(tmp_path, use_dora=True, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="DoRA"):
        write_lora_gguf(
            tmp_path / "x.gguf",
            adapter=LoraAdapter.load(adapter_dir),
            config=json.loads((base_dir / "config.json").read_text()),
        )
