"""The llamacpp policy: a tiny model written to GGUF by deploy.gguf (fast), and SmolLM2's packaged GGUF (slow)."""

from __future__ import annotations

import json

import pytest
from tiny import make_tokenizer, tiny_model

from data_prep.react import react_messages
from data_prep.render import render_prompt
from eval.household import generate_scenes
from eval.policies.hf import HFPolicy
from eval.runner import run_episodes
from models.loading import load_tokenizer
from models.registry import REGISTRY, packaged_gguf

pytest.importorskip("llama_cpp")

@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny untied Llama (fp32 weights) as an f32 GGUF, plus the same model in transformers."""
    from safetensors.numpy import load_file

    from deploy.gguf import write_gguf
    from deploy.tokenizer_gguf import build_vocab

    folder = tmp_path_factory.mktemp("tiny-gguf")
    tok = make_tokenizer("smollm2")
    model = tiny_model(tok, tie_word_embeddings=False)
    model.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    path = folder / "tiny-f32.gguf"
    write_gguf(path, config=cfg, vocab=build_vocab(tok, cfg.get("vocab_size")), names=list(weights),
               shape_of=lambda n: tuple(weights[n].shape), get_f32=lambda n: weights[n].astype("float32"),
               outtype="f32", progress=False)
    return path, model, tok


def _full_tokens(tok, r) -> int:
    steps = list(zip(r.actions, r.observations, strict=True))
    return sum(len(render_prompt(tok, react_messages(r.first_observation, steps[:t]))) for t in range(r.steps))


def test_llamacpp_reuses_prefix_and_matches_transformers(tiny_gguf):
    from eval.policies.llamacpp import LlamaCppPolicy

    path, model, tok = tiny_gguf
    scenes = generate_scenes("valid_seen", n=3)
    policy = LlamaCppPolicy(path, tok, n_ctx=1024, max_new_tokens=6)
    try:
        results = run_episodes(policy, scenes, max_steps=3, batch_size=2, progress=False)
    finally:
        policy.close()
    assert policy.instances == 2  # one Llama per concurrent episode, handed on when an episode ends
    hf = HFPolicy(model, tok, max_new_tokens=6)
    reference = run_episodes(hf, scenes, max_steps=3, batch_size=2, progress=False)
    # Same fp32 weights, same prompt ids: llama.cpp picks the same greedy actions as transformers.
    assert [r.actions for r in results] == [r.actions for r in reference]
    for r in results:
        assert 0 < r.tokens_encoded < _full_tokens(tok, r)
    # Fresh instances evaluate the whole first prompt; hf encodes the shared system-prompt prefix once.
    shared = hf.stats["shared_prefix_tokens"]
    assert shared > 50
    assert [r.tokens_encoded for r in results[:2]] == [r.tokens_encoded + shared for r in reference[:2]]
    # The third episode runs on a reused instance, which still holds (at least) that shared prefix.
    assert results[2].tokens_encoded <= reference[2].tokens_encoded


@pytest.mark.slow
def test_llamacpp_on_packaged_smollm2():
    from eval.policies.llamacpp import LlamaCppPolicy

    path = packaged_gguf(REGISTRY["smollm2-135m-instruct"])
    tok = load_tokenizer("smollm2-135m-instruct")
    policy = LlamaCppPolicy(path, tok, n_ctx=2048, max_new_tokens=16)
    try:
        results = run_episodes(policy, generate_scenes("valid_seen", n=2), max_steps=3, batch_size=2, progress=False)
    finally:
        policy.close()
    for r in results:
        assert r.steps >= 1 and 0 < r.tokens_encoded < _full_tokens(tok, r)
