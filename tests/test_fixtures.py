"""The fixtures themselves: real templates render, tiny models load and generate."""

from __future__ import annotations

import pytest
from tiny import make_tokenizer, tiny_model

CHAT = [
    {"role": "system", "content": "You are Lin."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
]


@pytest.mark.parametrize(
    "template,expected",
    [
        ("smollm2", "<|im_start|>system\nYou are Lin.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"),
        ("qwen2_5", "<|im_start|>system\nYou are Lin.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"),
        ("llama3", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are Lin.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"),
        ("mistral", "<s>[INST] You are Lin.\n\nHi[/INST] Hello!</s>"),
    ],
)
def test_templates_render_exactly(template: str, expected: str) -> None:
    tok = make_tokenizer(template)
    assert tok.apply_chat_template(CHAT, tokenize=False) == expected
    ids = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    # special tokens stay single tokens
    assert tok.eos_token_id in ids


def test_qwen_tool_branch() -> None:
    tok = make_tokenizer("qwen2_5")
    tools = [{"type": "function", "function": {"name": "ph", "description": "read pH", "parameters": {"type": "object", "properties": {}}}}]
    msgs = [
        {"role": "user", "content": "pH?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "ph", "arguments": {}}}]},
        {"role": "tool", "content": "7.2"},
        {"role": "assistant", "content": "It is 7.2."},
    ]
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False)
    assert "<tools>" in text and "<tool_call>\n{\"name\": \"ph\"" in text and "<tool_response>\n7.2\n</tool_response>" in text


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiny_model_generates(family: str) -> None:
    import torch

    tok = make_tokenizer("qwen2_5" if family == "qwen2" else "smollm2")
    model = tiny_model(tok, family=family)
    enc = tok.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    prompt = enc["input_ids"][0].tolist()
    # The prompt comes back unchanged, followed by exactly 4 new tokens: greedy decoding ran every step and
    # did not stop at an eos. (The prompt's own <|im_end|> tokens are eos, so "eos in out" proves nothing.)
    assert out.shape == (1, len(prompt) + 4)
    assert out[0, : len(prompt)].tolist() == prompt
    assert tok.eos_token_id not in out[0, len(prompt) :].tolist()
