"""Tiny Mistral, Qwen3, Phi-3, Gemma 2 and Gemma 3 models (``tests/tiny.py``) through our GGUF writer.

- the export pipeline (``deploy.export.run_export``: merge a LoRA adapter, GGUF f16 + q8_0, parity gate);
- the GGUF's own tokenizer in llama.cpp against the HF tokenizer (spaces, unicode, digits, special tokens);
- the layout facts each family needs, read back from the file (norm offsets, fused tensors, windows, caps);
- LoRA-only GGUFs on these layouts, Phi-3 LongRoPE, and the configs we refuse.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from deploy_fixtures import needs_llama_cpp
from tiny import FAMILIES, FAMILY_NAMES, family_tokenizer, spm_model, tiny_family

from deploy import verify
from deploy.gguf import ModelHParams, UnsupportedArchitecture, permute_rotary, write_gguf, write_lora_gguf
from deploy.tokenizer_gguf import build_vocab

ARCH = {"mistral": "llama", "qwen3": "qwen3", "phi3": "phi3", "gemma2": "gemma2", "gemma3": "gemma3"}
TEXTS = (
    "Hello world",
    "  two  spaces,\ttab and\nnew line ",
    "café naïve 日本語 🐟 ∑ Ωmega",
    "digits 1234567890, 3.14 and 2026-11-22",
)


def _state(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def _write(path: Path, model: Any, tok: Any, outtype: str = "f32", name: str | None = None) -> Path:
    """A GGUF straight from an in-memory model (no merge, no disk model)."""
    cfg = json.loads(model.config.to_json_string())
    cfg["architectures"] = [type(model).__name__]
    weights = _state(model)
    names = [n for n in weights if not (n == "lm_head.weight" and cfg.get("tie_word_embeddings"))]
    write_gguf(
        path,
        config=cfg,
        vocab=build_vocab(tok, cfg["vocab_size"]),
        names=names,
        shape_of=lambda n: weights[n].shape,
        get_f32=weights.__getitem__,
        outtype=outtype,
        model_name=name,
        progress=False,
    )
    return path


def _fields(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {
        t.name: np.asarray(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors
    }
    return fields, tensors


def _base_and_adapter(root: Path, family: str, logit_scale: float = 10.0) -> tuple[Path, Path]:
    """A tiny base (output embedding scaled up for decisive next-token margins) and a random LoRA on every
    linear layer (Phi-3's fused qkv_proj / gate_up_proj included), saved with the tokenizer like training."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_family(family, initializer_range=0.05)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(logit_scale)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    peft_model.peft_config["default"].base_model_name_or_path = str(root / "base")
    peft_model.save_pretrained(root / "adapter")
    tok.save_pretrained(root / "adapter")
    return root / "base", root / "adapter"


def _run_export(plan: Any) -> str | None:
    """Run the export; a refusal raised by the Modelfile step (deploy.modelfile) is returned, not raised:
    these tests are about the GGUF files and the parity gate, which come before it."""
    from deploy.export import run_export

    try:
        run_export(plan, log=lambda *_: None)
    except ValueError as exc:
        if not any("modelfile" in frame.filename for frame in traceback.extract_tb(exc.__traceback__)):
            raise
        return str(exc)
    return None


@needs_llama_cpp
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_export_pipeline_passes_the_parity_gate(family: str, tmp_path: Path) -> None:
    from deploy.export import ExportPlan

    base_dir, adapter_dir = _base_and_adapter(tmp_path, family)
    out = tmp_path / "export"
    plan = ExportPlan(
        out_dir=out,
        name=family,
        quants=["f16", "q8_0"],
        merged=True,
        base_dir=base_dir,
        adapter_dir=adapter_dir,
        scenario=None,
        system_prompt=None,
        ollama=False,
        progress=False,
    )
    modelfile_refusal = _run_export(plan)
    parity = json.loads((out / "parity.json").read_text())["files"]
    for q in ("f16", "q8_0"):
        entry = parity[f"{family}-{q}.gguf"]
        assert entry["status"] == "passed", entry["reason"]
        assert all(p["tokens_match"] for p in entry["prompts"])
    assert parity[f"{family}-q8_0.gguf"]["decisive_positions"] >= 8
    fields, _ = _fields(out / f"{family}-f16.gguf")
    assert fields["general.architecture"] == ARCH[family]
    assert fields["tokenizer.ggml.model"] == ("gpt2" if FAMILIES[family].spm is None else "llama")
    assert (out / "merged" / "model.safetensors").is_file()
    if modelfile_refusal is None:
        assert (out / "Modelfile").is_file()
    else:
        print(f"{family}: the Modelfile step refused: {modelfile_refusal}")


def _hf_ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _dummy_prefix(tok: Any) -> str:
    """``" "`` where transformers puts a space before a text that starts the input (Metaspace ``first``,
    transformers 5's default for Llama-style tokenizers); llama.cpp, told ``add_space_prefix=false`` (which
    is exact after a special token), needs that space spelled out. Gemma adds none, BPE has no such step."""
    pre = json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    return " " if pre.get("type") == "Metaspace" and pre.get("prepend_scheme") == "first" else ""


@needs_llama_cpp
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gguf_tokenizer_matches_hf(family: str, tmp_path: Path) -> None:
    """Rendered chats (the text the model is trained and prompted on) tokenize to the same ids in llama.cpp;
    raw text too, up to the one documented difference of SentencePiece ``first`` prefixing."""
    from llama_cpp import Llama

    model, tok = tiny_family(family)
    path = _write(tmp_path / "m.gguf", model, tok)
    llm = Llama(str(path), vocab_only=True, verbose=False)
    try:

        def ll_ids(text: str) -> list[int]:
            return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

        for text in TEXTS:
            chat = [
                {"role": "user", "content": text},
                {"role": "assistant", "content": text},
                {"role": "user", "content": "And " + text},
            ]
            rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            assert ll_ids(rendered) == _hf_ids(tok, rendered), rendered
            raw = text if text.startswith(" ") else _dummy_prefix(tok) + text
            assert ll_ids(raw) == _hf_ids(tok, text), repr(text)
        if FAMILIES[family].spm is not None:
            pieces = tok.convert_ids_to_tokens(_hf_ids(tok, TEXTS[2]))
            assert any(p.startswith("<0x") for p in pieces)  # the byte-fallback path is exercised
    finally:
        llm.close()


@needs_llama_cpp
@pytest.mark.parametrize(
    ("family", "name", "written"),
    [
        ("mistral", "phi3-lookalike", "phi_3-lookalike"),
        ("phi3", "my-run", "my-run-phi3"),
        ("phi3", "Phi-3-mini-qa", "Phi-3-mini-qa"),
    ],
)
def test_model_name_keeps_llama_cpp_whitespace_stripping_right(
    family: str, name: str, written: str, tmp_path: Path
) -> None:
    """llama.cpp strips whitespace after special tokens by ``general.name`` (phi3); the name written makes it
    do so exactly when the HF tokenizer does (Phi-3's role tokens do, Mistral's [INST] does not)."""
    from llama_cpp import Llama

    model, tok = tiny_family(family)
    path = _write(tmp_path / "m.gguf", model, tok, name=name)
    assert _fields(path)[0]["general.name"] == written
    chat = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    llm = Llama(str(path), vocab_only=True, verbose=False)
    try:
        assert list(llm.tokenize(rendered.encode(), add_bos=False, special=True)) == _hf_ids(tok, rendered)
    finally:
        llm.close()


def test_sentencepiece_vocab_layout() -> None:
    """Mistral's tiny SentencePiece vocab: types as llama.cpp's converter writes them, and scores whose order
    is the SentencePiece model's own merge order."""
    import sentencepiece as spm

    model, tok = tiny_family("mistral")
    vocab = build_vocab(tok, model.config.vocab_size)
    assert (vocab.model, vocab.pre, vocab.add_space_prefix, vocab.add_bos) == (
        "llama",
        "default",
        False,
        True,
    )
    types = dict(zip(vocab.tokens, vocab.token_types, strict=True))
    assert types["<unk>"] == gguf.TokenType.UNKNOWN
    assert types["<s>"] == types["</s>"] == types["[INST]"] == gguf.TokenType.CONTROL
    assert types["<0x0A>"] == gguf.TokenType.BYTE and types["▁the"] == gguf.TokenType.NORMAL
    assert len(vocab.scores) == len(vocab.tokens) == model.config.vocab_size
    sp = spm.SentencePieceProcessor(model_file=str(spm_model("llama")))
    merged = [
        i
        for i in range(sp.get_piece_size())
        if vocab.token_types[i] == gguf.TokenType.NORMAL and len(sp.id_to_piece(i)) > 1
    ]
    assert len(merged) > 1000
    ours = sorted(merged, key=lambda i: -vocab.scores[i])
    theirs = sorted(merged, key=lambda i: -sp.get_score(i))
    assert ours == theirs


def test_smollm2_tokenizer_stays_byte_level_bpe() -> None:
    """SmolLM2's rebuilt tokenizer.json says byte_fallback: true (llama.cpp's converter takes it for
    SentencePiece); its ByteLevel pipeline makes it gpt2 here."""
    from tiny import make_tokenizer

    tok = make_tokenizer("smollm2")
    assert json.loads(tok.backend_tokenizer.to_str())["model"].get("byte_fallback") is True
    vocab = build_vocab(tok)
    assert (vocab.model, vocab.pre, vocab.scores) == ("gpt2", "smollm", [])
    assert vocab.merges


def test_unigram_tokenizers_are_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        models.Unigram([("<unk>", 0.0), ("▁a", -1.0), ("a", -2.0)], unk_id=0, byte_fallback=True)
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(ValueError, match="Unigram"):
        build_vocab(tok)


def test_mistral_layout(tmp_path: Path) -> None:
    model, tok = tiny_family("mistral")
    fields, tensors = _fields(_write(tmp_path / "m.gguf", model, tok))
    assert fields["general.architecture"] == "llama"
    assert fields["llama.attention.key_length"] == fields["llama.rope.dimension_count"] == 32  # head_dim
    assert fields["llama.context_length"] == 2048  # the 4096-token window is longer than the context
    q = _state(model)["model.layers.0.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"], permute_rotary(q, 4))
    assert len(fields["tokenizer.ggml.scores"]) == len(fields["tokenizer.ggml.tokens"])


def test_mistral_sliding_window_caps_the_context() -> None:
    """llama.cpp runs Mistral unwindowed: the GGUF claims only the context where that equals transformers."""
    cfg = {
        "architectures": ["MistralForCausalLM"],
        "num_attention_heads": 4,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "vocab_size": 10,
        "max_position_embeddings": 32768,
        "sliding_window": 4096,
    }
    assert ModelHParams.from_config(cfg).n_ctx == 4096
    assert ModelHParams.from_config({**cfg, "sliding_window": None}).n_ctx == 32768


def test_qwen3_layout(tmp_path: Path) -> None:
    model, tok = tiny_family("qwen3")
    fields, tensors = _fields(_write(tmp_path / "m.gguf", model, tok))
    state = _state(model)
    assert fields["general.architecture"] == "qwen3" and fields["qwen3.attention.key_length"] == 32
    np.testing.assert_array_equal(
        tensors["blk.1.attn_k_norm.weight"], state["model.layers.1.self_attn.k_norm.weight"]
    )
    np.testing.assert_array_equal(
        tensors["blk.0.attn_q.weight"], state["model.layers.0.self_attn.q_proj.weight"]
    )
    assert "output.weight" not in tensors  # tied
    think = fields["tokenizer.ggml.tokens"].index("<think>")
    assert fields["tokenizer.ggml.token_type"][think] == gguf.TokenType.USER_DEFINED


def test_phi3_layout(tmp_path: Path) -> None:
    model, tok = tiny_family("phi3")
    fields, tensors = _fields(_write(tmp_path / "m.gguf", model, tok))
    state = _state(model)
    np.testing.assert_array_equal(
        tensors["blk.0.attn_qkv.weight"], state["model.layers.0.self_attn.qkv_proj.weight"]
    )
    assert tensors["blk.0.ffn_up.weight"].shape == (2 * 128, 64)  # gate and up, fused as llama.cpp runs them
    assert (
        fields["phi3.attention.sliding_window"] == 0
        and fields["phi3.rope.scaling.original_context_length"] == 2048
    )
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.eot_token_id"] == tok.convert_tokens_to_ids("<|end|>")


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_gemma_layout(family: str, tmp_path: Path) -> None:
    model, tok = tiny_family(family)
    fields, tensors = _fields(_write(tmp_path / "m.gguf", model, tok))
    state = _state(model)
    for hf, ours in (
        ("model.norm.weight", "output_norm.weight"),
        ("model.layers.1.post_attention_layernorm.weight", "blk.1.post_attention_norm.weight"),
        ("model.layers.1.pre_feedforward_layernorm.weight", "blk.1.ffn_norm.weight"),
        ("model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight"),
    ):
        np.testing.assert_allclose(
            tensors[ours], state[hf] + 1.0, rtol=0, atol=1e-7
        )  # (1 + w) as a plain scale
    assert "output.weight" not in tensors
    assert fields[f"{family}.attention.sliding_window"] == 8
    assert list(fields[f"{family}.attention.sliding_window_pattern"]) == [True, False]
    assert fields["tokenizer.ggml.add_space_prefix"] is False and fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.eot_token_id"] == tok.convert_tokens_to_ids("<end_of_turn>")
    if family == "gemma2":
        assert (
            fields["gemma2.attn_logit_softcapping"] == 50.0
            and fields["gemma2.final_logit_softcapping"] == 30.0
        )
    else:
        np.testing.assert_allclose(
            tensors["blk.0.attn_q_norm.weight"],
            state["model.layers.0.self_attn.q_norm.weight"] + 1.0,
            rtol=0,
            atol=1e-7,
        )
        assert fields["gemma3.rope.freq_base"] == 1e6 and fields["gemma3.rope.freq_base_swa"] == 1e4


def _config(family: str, **changes: Any) -> dict[str, Any]:
    model, _ = tiny_family(family, **changes)
    cfg = json.loads(model.config.to_json_string())
    cfg["architectures"] = [type(model).__name__]
    return cfg


def test_refusals() -> None:
    with pytest.raises(ValueError, match=r"query_pre_attn_scalar=256.*1/sqrt\(16\)"):
        ModelHParams.from_config(_config("gemma2", query_pre_attn_scalar=256))
    model, tok = tiny_family("gemma2", tie_word_embeddings=False)
    cfg = {**json.loads(model.config.to_json_string()), "architectures": ["Gemma2ForCausalLM"]}
    weights = _state(model)
    with pytest.raises(ValueError, match="always reuses the token embedding"):
        write_gguf(
            Path("/nonexistent/x.gguf"),
            config=cfg,
            vocab=build_vocab(tok),
            names=list(weights),
            shape_of=lambda n: weights[n].shape,
            get_f32=weights.__getitem__,
            progress=False,
        )
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512, "rope_theta": 1e6}
    with pytest.raises(UnsupportedArchitecture, match="yarn"):
        ModelHParams.from_config({**_config("qwen3"), "rope_parameters": yarn})


def _longrope_phi3() -> tuple[Any, Any]:
    """Phi-3 with LongRoPE (a 4x longer context than pre-training, per-frequency short/long factors)."""
    rng = np.random.default_rng(0)
    half = 64 // 4 // 2
    rope = {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "short_factor": (1.0 + rng.random(half)).round(3).tolist(),
        "long_factor": (2.0 + 4 * rng.random(half)).round(3).tolist(),
    }
    return tiny_family(
        "phi3",
        rope_parameters=rope,
        max_position_embeddings=8192,
        original_max_position_embeddings=2048,
        initializer_range=0.05,
    )


@needs_llama_cpp
@pytest.mark.slow
def test_phi3_longrope_parity(tmp_path: Path) -> None:
    """The short factors and the attention factor reach llama.cpp (the gate's prompts are within the
    pre-training context, where both sides use the short factors)."""
    model, tok = _longrope_phi3()
    path = _write(tmp_path / "m.gguf", model, tok, "f16")
    fields, tensors = _fields(path)
    np.testing.assert_allclose(
        tensors["rope_factors_short.weight"], model.config.rope_parameters["short_factor"], rtol=1e-6
    )
    assert fields["phi3.rope.scaling.attn_factor"] == pytest.approx(np.sqrt(1 + np.log(4) / np.log(2048)))
    res = verify.compare(path, "f16", model, tok)
    assert res.status == "passed", res.reason


@needs_llama_cpp
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lora_only_gguf(family: str, tmp_path: Path) -> None:
    """A LoRA GGUF (fused Phi-3 targets, permuted Mistral q/k) on an f16 base GGUF == PEFT in transformers."""
    from transformers import AutoTokenizer

    from deploy.lora import LoraAdapter
    from deploy.merge import MergeSource

    base_dir, adapter_dir = _base_and_adapter(tmp_path, family, logit_scale=1.0)
    base = MergeSource(base_dir)
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    base_gguf = write_gguf(
        tmp_path / "base.gguf",
        config=base.config,
        vocab=build_vocab(tok, base.config["vocab_size"]),
        names=base.names(),
        shape_of=base.shape,
        read_rows=base.get_rows,
        progress=False,
    ).path
    lora = write_lora_gguf(tmp_path / "lora.gguf", adapter=LoraAdapter.load(adapter_dir), config=base.config)
    reference = verify.load_reference(base_dir, adapter_dir)
    res = verify.compare(base_gguf, "f16", reference, tok, lora_path=lora)
    assert res.status == "passed", res.reason
    assert (
        verify.compare(base_gguf, "f16", reference, tok).status == "failed"
    )  # the adapter is really applied


@needs_llama_cpp
@pytest.mark.slow
def test_gemma2_softcapping_parity(tmp_path: Path) -> None:
    """Strong attention and final softcaps (2 and 3) reach llama.cpp. Query and key weights are scaled up so
    attention scores reach well past the cap. The reference runs eager attention: transformers' sdpa path
    drops Gemma 2's attention softcapping."""
    import torch

    model, tok = tiny_family(
        "gemma2", attn_logit_softcapping=2.0, final_logit_softcapping=3.0, attn_implementation="eager"
    )
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30.0)
            layer.self_attn.k_proj.weight.mul_(30.0)
    path = _write(tmp_path / "m.gguf", model, tok, "f32")
    res = verify.compare(path, "f32", model, tok)
    assert res.status == "passed", res.reason


def test_older_config_keys() -> None:
    """Configs saved before transformers 5 (``rope_theta``, ``rope_local_base_freq``, ``rope_scaling``,
    ``sliding_window_pattern``) give the same hyperparameters as ``rope_parameters`` / ``layer_types``."""
    cfg = {
        "architectures": ["Gemma3ForCausalLM"],
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "hidden_size": 1152,
        "head_dim": 256,
        "num_hidden_layers": 26,
        "intermediate_size": 6912,
        "vocab_size": 262144,
        "query_pre_attn_scalar": 256,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window": 512,
        "sliding_window_pattern": 6,
        "max_position_embeddings": 32768,
    }
    hp = ModelHParams.from_config(cfg)
    assert (hp.rope_theta, hp.rope_theta_swa, hp.sliding_window, hp.n_ctx) == (1e6, 1e4, 512, 32768)
    assert hp.rope_scaling == {"rope_type": "linear", "factor": 8.0}
    assert hp.swa_layers == tuple((i + 1) % 6 != 0 for i in range(26))


def test_reference_loads_softcapped_models_with_eager_attention(tmp_path: Path) -> None:
    """The parity gate's reference (models.loading) must compute Gemma 2's attention softcap, which
    transformers' sdpa path drops: loaded from a folder it runs eager and gives eager's logits."""
    import torch

    from models.loading import load_causal_lm

    model, tok = tiny_family("gemma2", attn_logit_softcapping=2.0, attn_implementation="eager")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30.0)
    model.save_pretrained(tmp_path)
    loaded = load_causal_lm(str(tmp_path))
    assert loaded.config._attn_implementation == "eager"
    ids = torch.tensor([tok("the kitchen has a mug and a cabinet", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        want = model(ids).logits
        sdpa = type(model).from_pretrained(tmp_path, attn_implementation="sdpa")(ids).logits
        got = loaded(ids).logits
    assert torch.equal(got, want)
    assert not torch.allclose(sdpa, want, atol=1e-4)  # the cap matters for these weights


def test_parity_prompts_drop_the_system_turn_only_where_the_template_refuses_it() -> None:
    """Gemma 2's real template raises on a system message; the gate still renders all three prompts."""
    spec = json.loads((Path(__file__).parent / "fixtures/chat_templates/google--gemma-2-2b-it.json").read_text())
    tok = family_tokenizer("gemma2")
    tok.chat_template = spec["chat_template"]
    texts = verify.render_prompts(tok)
    assert len(texts) == len(verify.PROMPTS)
    assert "household robot" not in texts[1] and "put a clean mug" in texts[1]
    tok.chat_template = (Path(__file__).parent / "fixtures/templates/gemma3.jinja").read_text()
    assert "household robot" in verify.render_prompts(tok)[1]  # Gemma 3 merges it into the user turn


def test_gguf_carries_the_template_adjusted_for_llama_cpp() -> None:
    """The GGUF's tokenizer.chat_template is deploy.modelfile.gguf_chat_template's: for a template without a
    system role (Gemma 2) it merges the system prompt into the first user turn, as the Go TEMPLATE does."""
    from deploy.modelfile import gguf_chat_template
    from deploy.tokenizer_gguf import build_vocab

    spec = json.loads((Path(__file__).parent / "fixtures/chat_templates/google--gemma-2-2b-it.json").read_text())
    tok = family_tokenizer("gemma2")
    tok.chat_template = spec["chat_template"]
    vocab = build_vocab(tok)
    assert vocab.chat_template == gguf_chat_template(tok) != spec["chat_template"]
    tok.chat_template = vocab.chat_template
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], tokenize=False
    )
    assert "Be brief.\n\nHi" in text
