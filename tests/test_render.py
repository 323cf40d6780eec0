"""Assistant-only label masks on the four real chat templates, checked token by token.

The expected labels are built here independently of ``data_prep.render``: each message's rendered form is
located in the text in order (the test knows how each template renders a turn), and a token is expected
to be trained exactly when it starts inside an assistant turn's content + end-of-turn string.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import TEMPLATE_NAMES, make_tokenizer

from data_prep.react import react_messages
from data_prep.render import IGNORE_INDEX, RenderedExample, RenderError, render_example, render_prompt

EOT = {"smollm2": "<|im_end|>", "qwen2_5": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "</s>"}


@functools.cache
def tokenizer_for(template: str) -> Any:
    """One tokenizer per template for the module (make_tokenizer deep-copies; render never mutates it)."""
    return make_tokenizer(template)


def assistant_piece(template: str, content: str) -> str:
    """What each template writes for an assistant turn, minus its header: content + end-of-turn."""
    if template == "llama3":
        return content.strip() + EOT[template]  # the template applies `| trim`
    if template == "mistral":
        return " " + content + EOT[template]
    return content + EOT[template]


def expected_labels(tok: Any, template: str, messages: list[dict[str, Any]], text: str) -> list[int]:
    """Label vector built by locating every message in ``text`` in order (independent of render.py)."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    cursor = 0
    for m in messages:
        if m["role"] == "assistant":
            piece = assistant_piece(template, m["content"])
            at = text.find(piece, cursor)
            assert at >= 0, f"assistant piece {piece!r} not found after {cursor}"
            for t, (s, _) in enumerate(offsets):
                if at <= s < at + len(piece):
                    labels[t] = ids[t]
            cursor = at + len(piece)
        else:
            content = m["content"].strip() if template == "llama3" else m["content"]
            at = text.find(content, cursor)
            assert at >= 0, f"{m['role']} content {content!r} not found after {cursor}"
            cursor = at + len(content)
    return labels


def labelled_runs(tok: Any, ex: RenderedExample) -> list[str]:
    """Decoded maximal runs of consecutive labelled tokens."""
    runs: list[list[int]] = []
    prev = False
    for tid, lab in zip(ex.input_ids, ex.labels, strict=True):
        on = lab != IGNORE_INDEX
        if on:
            assert lab == tid, "a trained label must be the token id itself"
            if not prev:
                runs.append([])
            runs[-1].append(tid)
        prev = on
    return [tok.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in runs]


def check_example(template: str, messages: list[dict[str, Any]], **kw: Any) -> RenderedExample:
    tok = tokenizer_for(template)
    ex = render_example(tok, messages, **kw)
    assert ex.text == tok.apply_chat_template(messages, tokenize=False, **kw)
    assert ex.input_ids == tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"]
    assert len(ex.labels) == len(ex.input_ids) == ex.n_tokens
    # token by token
    want = expected_labels(tok, template, messages, ex.text)
    diff = [(i, tok.convert_ids_to_tokens(ex.input_ids[i]), ex.labels[i], want[i])
            for i in range(len(want)) if ex.labels[i] != want[i]]
    assert not diff, f"labels differ at (index, token, got, want): {diff[:10]}"
    # decoded runs: one per assistant turn, each exactly its content plus end-of-turn token
    pieces = [assistant_piece(template, m["content"]) for m in messages if m["role"] == "assistant"]
    assert labelled_runs(tok, ex) == pieces
    assert ex.n_trained == sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in pieces)
    return ex


SYS = "You are Lin, a calm fish-keeping expert."
CHAT = [
    {"role": "user", "content": "How often should I change the water?"},
    {"role": "assistant", "content": "About 20% every week."},
    {"role": "user", "content": "And the filter?"},
    {"role": "assistant", "content": "Rinse the sponge in old tank water once a month.\nNever under the tap."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You're welcome. Happy fish-keeping!"},
]


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
@pytest.mark.parametrize("with_system", [True, False], ids=["system", "no-system"])
def test_multi_turn_labels_token_by_token(template: str, with_system: bool) -> None:
    msgs = ([{"role": "system", "content": SYS}] if with_system else []) + CHAT
    ex = check_example(template, msgs)
    assert not ex.truncated
    untrained = tokenizer_for(template).decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == IGNORE_INDEX], skip_special_tokens=False
    )
    for m in msgs:
        if m["role"] != "assistant":
            assert m["content"] in untrained  # every system/user token stays untrained
    if template in ("smollm2", "qwen2_5") and not with_system:
        # the template's injected default system prompt is rendered but never trained
        assert "<|im_start|>system\n" in ex.text and "system" not in "".join(labelled_runs(tokenizer_for(template), ex))


def test_any_tokenizer_fixture_single_turn(any_tokenizer: Any) -> None:
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ex = render_example(any_tokenizer, msgs)
    trained = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX]
    # the last trained token is the end-of-turn token; the header before the answer is not trained
    assert trained[-1] == any_tokenizer.eos_token_id
    assert any_tokenizer.decode(trained[:-1], skip_special_tokens=False).strip() == "Hello!"
    assert ex.labels[-1] in (IGNORE_INDEX, any_tokenizer.eos_token_id)


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5"])
def test_chatml_newline_after_eos_not_trained(template: str) -> None:
    tok = tokenizer_for(template)
    ex = render_example(tok, CHAT[:2])
    assert ex.text.endswith("<|im_end|>\n")
    assert tok.convert_ids_to_tokens(ex.input_ids[-2:]) == ["<|im_end|>", "Ċ"]
    assert ex.labels[-2] == tok.convert_tokens_to_ids("<|im_end|>") and ex.labels[-1] == IGNORE_INDEX


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_react_chat_every_assistant_turn_trained(template: str) -> None:
    steps = []
    for k in range(15):
        steps.append((f"think: I should look in cabinet {k + 1}.", "OK."))
        steps.append((f"go to cabinet {k + 1}", f"On the cabinet {k + 1}, you see nothing."))
    obs = ("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, "
           "you see a cabinet 1, a countertop 1.\n\nYour task is to: put a clean mug in coffeemachine.")
    msgs = react_messages(obs, steps, include_final_observation=False)
    assert sum(m["role"] == "assistant" for m in msgs) == 30
    ex = check_example(template, msgs)
    assert len(labelled_runs(tokenizer_for(template), ex)) == 30


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_chinese_roleplay(template: str) -> None:
    msgs = [
        {"role": "system", "content": "你是林老师，一位耐心的养鱼专家。"},
        {"role": "user", "content": "我的金鱼浮在水面上，怎么办？"},
        {"role": "assistant", "content": "先别慌。请测一下水里的氨和亚硝酸盐，然后换掉三分之一的水。"},
        {"role": "user", "content": "好的，谢谢！"},
        {"role": "assistant", "content": "不客气 🐟 有问题随时问我。"},
    ]
    check_example(template, msgs)


TOOLS = [{"type": "function", "function": {
    "name": "get_ph", "description": "Read the tank's pH",
    "parameters": {"type": "object", "properties": {"tank": {"type": "string"}}, "required": ["tank"]}}}]


def test_qwen_tool_calls_are_trained_tool_turns_are_not() -> None:
    tok = tokenizer_for("qwen2_5")
    call = {"type": "function", "function": {"name": "get_ph", "arguments": {"tank": "reef"}}}
    msgs = [
        {"role": "user", "content": "What is the pH of my reef tank?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "get_ph", "content": "8.1"},
        {"role": "tool", "name": "get_ph", "content": "stable"},
        {"role": "assistant", "content": "Let me check again.", "tool_calls": [call]},
        {"role": "tool", "name": "get_ph", "content": "8.2"},
        {"role": "assistant", "content": "Your reef tank is at pH 8.2, which is fine."},
    ]
    ex = render_example(tok, msgs, tools=TOOLS)
    assert ex.text == tok.apply_chat_template(msgs, tools=TOOLS, tokenize=False)
    assert ex.input_ids == tok.apply_chat_template(msgs, tools=TOOLS, return_dict=True)["input_ids"]
    tool_call = '<tool_call>\n{"name": "get_ph", "arguments": {"tank": "reef"}}\n</tool_call>'
    assert labelled_runs(tok, ex) == [
        tool_call + "<|im_end|>",
        "Let me check again.\n" + tool_call + "<|im_end|>",
        "Your reef tank is at pH 8.2, which is fine.<|im_end|>",
    ]
    untrained = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == IGNORE_INDEX],
                           skip_special_tokens=False)
    assert "<tool_response>\n8.1\n</tool_response>" in untrained and "# Tools" in untrained


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_truncation_cuts_ids_and_labels_together(template: str) -> None:
    tok = tokenizer_for(template)
    full = render_example(tok, CHAT)
    cut = render_example(tok, CHAT, max_length=full.n_tokens - 7)
    assert cut.truncated and cut.n_tokens == full.n_tokens - 7
    assert cut.input_ids == full.input_ids[:-7] and cut.labels == full.labels[:-7]
    assert cut.text == full.text
    assert cut.n_trained < full.n_trained
    same = render_example(tok, CHAT, max_length=full.n_tokens)
    assert not same.truncated and same.labels == full.labels
    with pytest.raises(ValueError, match="max_length"):
        render_example(tok, CHAT, max_length=0)


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_render_prompt_is_prefix_of_training_ids(template: str) -> None:
    tok = tokenizer_for(template)
    msgs = [{"role": "system", "content": SYS}, *CHAT]
    ex = render_example(tok, msgs)
    for k in (2, 4, 6):  # each prompt ends on a user turn; the answer that follows starts with a letter
        prompt = render_prompt(tok, msgs[:k])
        assert ex.input_ids[: len(prompt)] == prompt
        assert ex.labels[len(prompt) - 1] == IGNORE_INDEX and ex.labels[len(prompt)] != IGNORE_INDEX
        text = tok.apply_chat_template(msgs[:k], add_generation_prompt=True, tokenize=False)
        assert tok.decode(prompt, skip_special_tokens=False) == text


def test_render_prompt_errors() -> None:
    tok = tokenizer_for("smollm2")
    with pytest.raises(RenderError, match="ends on an assistant turn"):
        render_prompt(tok, CHAT)
    with pytest.raises(RenderError, match="empty"):
        render_prompt(tok, [])


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_no_assistant_turn(template: str) -> None:
    with pytest.raises(RenderError, match="no assistant turn"):
        render_example(tokenizer_for(template), [{"role": "system", "content": SYS}, CHAT[0]])


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_chat_starting_with_assistant(template: str) -> None:
    msgs = [{"role": "assistant", "content": "Welcome to the shop!"}, *CHAT[:2]]
    if template == "llama3":  # renders the empty chat as a true prefix: works
        check_example(template, msgs)
    else:  # default system prompt only with messages / messages[0] needed: refused with a clear message
        with pytest.raises(RenderError, match="starts with an assistant turn"):
            render_example(tokenizer_for(template), msgs)


def test_leading_newline_shares_a_token_with_the_chatml_header() -> None:
    tok = tokenizer_for("smollm2")
    ex = render_example(tok, [CHAT[0], {"role": "assistant", "content": "\n\nabc"}])
    assert "<|im_start|>assistant\n\n\nabc<|im_end|>" in ex.text
    # the header's "\n" and the answer's first "\n" form one token, which starts in the prompt
    assert labelled_runs(tok, ex) == ["\nabc<|im_end|>"]


def test_template_that_raises() -> None:
    # Mistral's template has no tool role: raise_exception() inside the template
    msgs = [*CHAT[:2], {"role": "tool", "content": "8.1"}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(RenderError, match="chat template failed.*Only user and assistant"):
        render_example(tokenizer_for("mistral"), msgs)
    tok = make_tokenizer("smollm2")
    tok.chat_template = "{{ messages[0].content + undefined_function() }}"
    with pytest.raises(RenderError, match="chat template failed"):
        render_example(tok, CHAT)
    tok.chat_template = None
    with pytest.raises(RenderError, match="chat template failed"):
        render_example(tok, CHAT)


def test_bad_message_shape() -> None:
    tok = tokenizer_for("smollm2")
    with pytest.raises(RenderError, match="message 1"):
        render_example(tok, [CHAT[0], {"content": "no role"}])
    with pytest.raises(RenderError, match="list"):
        render_example(tok, "hello")  # type: ignore[arg-type]


# ChatML, but the final message is rendered differently from the same message in a longer chat:
# rendering prefixes cannot locate turns in the full text.
_LAST_TURN_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}"
    "{% if m.role == 'assistant' %}{GEN_OPEN}{{ m.content + ('  (final)' if loop.last else '') + '<|im_end|>' }}"
    "{GEN_CLOSE}{% else %}{{ m.content + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_prefix_inconsistent_template_raises() -> None:
    tok = make_tokenizer("smollm2")
    tok.chat_template = _LAST_TURN_TEMPLATE.replace("{GEN_OPEN}", "").replace("{GEN_CLOSE}", "")
    assert tok.apply_chat_template(CHAT[:2], tokenize=False).endswith("(final)<|im_end|>\n")
    with pytest.raises(RenderError, match=r"messages\[:2\] is not a prefix"):
        render_example(tok, CHAT)
    # a single assistant turn at the end is still prefix-consistent
    assert render_example(tok, CHAT[:2]).n_trained > 0


def test_prefix_inconsistent_template_with_generation_markers_falls_back() -> None:
    tok = make_tokenizer("smollm2")
    tok.chat_template = (_LAST_TURN_TEMPLATE.replace("{GEN_OPEN}", "{% generation %}")
                         .replace("{GEN_CLOSE}", "{% endgeneration %}"))
    ex = render_example(tok, CHAT)
    assert labelled_runs(tok, ex) == [
        "About 20% every week.<|im_end|>",
        "Rinse the sponge in old tank water once a month.\nNever under the tap.<|im_end|>",
        "You're welcome. Happy fish-keeping!  (final)<|im_end|>",
    ]


# --- property test -------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("abcXYZ019 .,!?:'\"-_\n\t") + ["é", "ß", "中", "文", "🐟", "ő", "ж", "\u00a0"])
_TEXT = st.text(_ALPHABET, min_size=1, max_size=12)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, str]]:
    msgs: list[dict[str, str]] = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": "S:" + draw(_TEXT)})
    for _ in range(draw(st.integers(1, 5))):
        msgs.append({"role": "user", "content": "U:" + draw(_TEXT)})
        msgs.append({"role": "assistant", "content": draw(_TEXT)})
    return msgs


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=conversations())
def test_property_labels_are_exactly_assistant_turns(template: str, msgs: list[dict[str, str]]) -> None:
    tok = tokenizer_for(template)
    ex = render_example(tok, msgs)
    assert ex.input_ids == tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
    runs = labelled_runs(tok, ex)
    assistant = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert len(runs) == len(assistant)
    for run, content in zip(runs, assistant, strict=True):
        want = assistant_piece(template, content)
        # Exact, except that leading whitespace of an answer can share one token with the header's own
        # whitespace (ChatML "assistant\n" + "\n..." -> "\n\n"); that token is prompt, hence untrained.
        assert want.endswith(run), (run, want)
        lost = want[: len(want) - len(run)]
        assert not lost.strip(), (run, want)
        if lost:
            assert content[:1].isspace()
    # and nothing outside: trained tokens decode to exactly the concatenation of the assistant turns
    trained = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(trained, skip_special_tokens=False) == "".join(runs)
