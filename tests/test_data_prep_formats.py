"""Every reader turns its format into the canonical Conversation; detection and row errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.formats import Columns, FormatOptions, Tags, detect_format, to_conversation
from data_prep.io import DataPrepError, Reader, Record
from data_prep.react import react_system_prompt
from data_prep.validate import REASONS, RowError, validate

FIX = Path(__file__).parent / "fixtures" / "data"
OPTS = FormatOptions()


def _rows(name: str) -> list[Record]:
    return [r for r in Reader(FIX / name) if isinstance(r, Record)]


def _chat(name: str, fmt: str, opts: FormatOptions = OPTS) -> list[list[dict]]:
    out = []
    for rec in _rows(name):
        conv = to_conversation(fmt, rec.value, opts)
        validate(conv)
        out.append(conv.as_chat())
    return out


def test_alpaca_with_input_system_and_history() -> None:
    chats = _chat("alpaca.json", "alpaca")
    assert chats[0] == [{"role": "user", "content": "Name the largest planet."},
                        {"role": "assistant", "content": "Jupiter is the largest planet in the Solar System."}]
    assert chats[1] == [{"role": "system", "content": "You are a translator."},
                        {"role": "user", "content": "Translate to French.\nGood morning"},
                        {"role": "assistant", "content": "Bonjour"}]
    assert [m["role"] for m in chats[2]] == ["system", "user", "assistant", "user", "assistant"]
    assert chats[2][1]["content"] == "Translate 'thank you' to French." and chats[2][2]["content"] == "Merci"
    assert chats[3][0]["content"] == "水族箱的水多久换一次？"


def test_sharegpt_function_call_observation_and_tools() -> None:
    recs = _rows("sharegpt.jsonl")
    first = to_conversation("sharegpt", recs[0].value, OPTS)
    assert [m.role for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    conv = to_conversation("sharegpt", recs[1].value, OPTS)
    validate(conv)
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert conv.messages[1].tool_calls == [
        {"type": "function", "function": {"name": "get_water_temp", "arguments": {"tank": "A"}}}]
    assert conv.messages[2].name == "get_water_temp" and conv.messages[2].content == '{"celsius": 25.5}'
    assert conv.tools and conv.tools[0]["type"] == "function"
    assert conv.tools[0]["function"]["name"] == "get_water_temp"
    # a system turn inside the conversation is the system prompt
    assert to_conversation("sharegpt", recs[2].value, OPTS).messages[0].content == "You are a pirate."


def test_openai_tool_calls_and_text_parts() -> None:
    recs = _rows("openai.jsonl")
    conv = to_conversation("openai", recs[1].value, OPTS)
    validate(conv)
    assert conv.messages[1].tool_calls == [
        {"type": "function", "function": {"name": "get_water_temp", "arguments": {"tank": "B"}}, "id": "call_1"}]
    assert conv.messages[1].content == ""
    assert conv.messages[2].role == "tool" and conv.messages[2].name == "get_water_temp"  # from tool_call_id
    assert to_conversation("openai", recs[2].value, OPTS).messages[0].content == "Say hi"


def test_qa_default_and_custom_fields_and_system_prompt() -> None:
    chats = _chat("qa.jsonl", "qa")
    assert chats[0][0] == {"role": "user", "content": "What pH do neon tetras prefer?"}
    opts = FormatOptions(question_field="q", answer_field="a", system_prompt="You are a fish expert.")
    chats = _chat("qa_custom.jsonl", "qa", opts)
    assert chats[0] == [{"role": "system", "content": "You are a fish expert."},
                        {"role": "user", "content": "Do goldfish need a heater?"},
                        {"role": "assistant", "content": "No, goldfish are cold-water fish and do well at room temperature."}]
    conv = to_conversation("qa", _rows("qa.jsonl")[0].value, OPTS)
    assert conv.tags == ["fish"]


def test_roleplay_requires_a_character_system_prompt() -> None:
    recs = _rows("roleplay.jsonl")
    conv = to_conversation("roleplay", recs[0].value, OPTS)
    assert conv.messages[0].role == "system" and "Captain Mira" in conv.messages[0].content
    with pytest.raises(RowError) as e:
        to_conversation("roleplay", recs[2].value, OPTS)
    assert e.value.reason == "missing_field"
    card = FormatOptions(system_prompt="You are Mira.")
    assert to_conversation("roleplay", recs[2].value, card).messages[0].content == "You are Mira."


def test_react_json_trajectory_becomes_the_react_chat() -> None:
    rec = _rows("react.jsonl")[0]
    conv = to_conversation("react", rec.value, OPTS)
    validate(conv)
    assert conv.task_type == "pick_and_place_simple"
    assert conv.messages[0].content == react_system_prompt("2.1.1")
    assert conv.messages[1].content.startswith("You are in the middle of a room.")  # welcome stripped
    assert conv.messages[2].content == "think: I need an apple."
    assert conv.messages[-1].role == "assistant"
    assert len(conv.messages) == 2 + 2 * len(rec.value["steps"]) - 1


def test_react_text_trajectories() -> None:
    items = list(Reader(FIX / "react.txt"))
    conv = to_conversation("react", items[0].value, OPTS)
    validate(conv)
    assert conv.task_type == "pick_heat_then_place_in_recep"
    assert conv.messages[-1].content == "put egg 1 in/on countertop 1"
    assert to_conversation("react", items[1].value, OPTS).task_type == "look_at_obj_in_light"
    with pytest.raises(RowError) as e:
        to_conversation("react", items[2].value, OPTS)
    assert e.value.reason == "missing_field" and "line 25" in e.value.detail


def test_llamafactory_style_columns_and_tags() -> None:
    opts = FormatOptions(columns=Columns(messages="dialog", system="sys", tools="fns"),
                         tags=Tags(role_tag="speaker", content_tag="text", user_tag="customer",
                                   assistant_tag="agent", observation_tag="result", function_tag="call",
                                   system_tag="setup"))
    recs = _rows("llamafactory/lf_sharegpt.jsonl")
    conv = to_conversation("sharegpt", recs[0].value, opts)
    validate(conv)
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert conv.messages[2].tool_calls[0]["function"] == {"name": "feed", "arguments": {"grams": 2}}
    assert to_conversation("sharegpt", recs[1].value, opts).messages[0].content == "Be friendly."
    with pytest.raises(RowError) as e:
        to_conversation("sharegpt", recs[2].value, opts)
    assert e.value.reason == "unknown_role"


@pytest.mark.parametrize(
    "name,fmt",
    [("alpaca.json", "alpaca"), ("sharegpt.jsonl", "sharegpt"), ("openai.jsonl", "openai"), ("qa.jsonl", "qa"),
     ("roleplay.jsonl", "openai"), ("react.jsonl", "react"), ("react.txt", "react")],
)
def test_detect_format(name: str, fmt: str) -> None:
    first = next(iter(Reader(FIX / name)))
    assert detect_format(first.value, first.source, OPTS) == fmt


def test_detect_sharegpt_turns_under_messages_and_custom_qa_fields() -> None:
    row = {"messages": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    assert detect_format(row, "f:1", OPTS) == "sharegpt"
    assert detect_format({"q": "a", "a": "b"}, "f:1", FormatOptions(question_field="q", answer_field="a")) == "qa"


@pytest.mark.parametrize(
    "row,words",
    [
        ({"foo": 1}, "cannot tell the format"),
        ({"messages": [], "conversations": []}, "ambiguous format"),
        ({"answer": "a", "chosen": "b"}, "cannot tell the format"),
        ([1, 2], "not an object"),
    ],
)
def test_detect_format_errors_list_the_choices(row: object, words: str) -> None:
    with pytest.raises(DataPrepError) as e:
        detect_format(row, "data.jsonl:1", OPTS)
    msg = str(e.value)
    assert msg.startswith("data.jsonl:1: ") and words in msg
    if "not supported" not in msg:
        assert "alpaca, sharegpt, openai, qa, roleplay, react" in msg


@pytest.mark.parametrize(
    "fmt,row,reason",
    [
        ("alpaca", {"instruction": "a"}, "missing_field"),
        ("alpaca", {"instruction": "a", "output": 5}, "wrong_type"),
        ("alpaca", {"instruction": None, "output": "b"}, "null_content"),
        ("alpaca", {"instruction": "a", "output": "b", "history": [["only one"]]}, "wrong_type"),
        ("sharegpt", {"conversations": [{"from": "bot", "value": "x"}]}, "unknown_role"),
        ("sharegpt", {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "{oops"}]},
         "wrong_type"),
        ("sharegpt", {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}], "tools": "[bad"},
         "wrong_type"),
        ("openai", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]},
         "unsupported_format"),
        ("openai", {"messages": [{"role": "user", "content": "x"}], "images": ["a.png"]}, "unsupported_format"),
        ("qa", {"question": "a"}, "missing_field"),
        ("react", {"observation": "", "steps": []}, "empty_content"),
        ("react", {"observation": "room", "steps": "go"}, "wrong_type"),
        ("react", {"steps": []}, "missing_field"),
        ("openai", "a string row", "not_an_object"),
    ],
)
def test_row_errors_have_fixed_reasons(fmt: str, row: object, reason: str) -> None:
    with pytest.raises(RowError) as e:
        to_conversation(fmt, row, OPTS)
    assert e.value.reason == reason and e.value.reason in REASONS and e.value.detail


def test_validate_role_rules() -> None:
    def check(msgs: list[dict]) -> str | None:
        from data_prep.conversation import Conversation

        try:
            validate(Conversation.from_dict({"messages": msgs}))
        except RowError as e:
            return e.reason
        return None

    u, a = {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}
    s = {"role": "system", "content": "s"}
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}]}
    tool = {"role": "tool", "content": "r"}
    assert check([s, u, a, u, a]) is None
    assert check([u, call, tool, tool, a]) is None
    assert check([u, a, s, u, a]) == "bad_role_order"
    assert check([u, u, a]) == "bad_role_order"
    assert check([u, a, a]) == "bad_role_order"
    assert check([u, a, tool, a]) == "bad_role_order"
    assert check([s, a]) == "bad_role_order"
    assert check([u, call]) is None  # ending on a tool call is a trainable assistant turn
    assert check([u, a, u]) == "no_final_assistant"
    assert check([]) == "missing_field"
    assert check([u, {"role": "assistant", "content": ""}]) == "empty_content"
    assert json.dumps(REASONS)  # reasons are plain strings


def test_react_json_and_text_forms_give_the_same_chat(tmp_path: Path) -> None:
    from data_prep.react import Trajectory, format_react_text

    recs = _rows("react.jsonl")
    p = tmp_path / "same.txt"
    p.write_text("".join(format_react_text(Trajectory.from_dict(r.value)) + "\n" for r in recs))
    text_rows = [r for r in Reader(p) if isinstance(r, Record)]
    assert len(text_rows) == len(recs)
    for j, t in zip(recs, text_rows, strict=True):
        a, b = to_conversation("react", j.value, OPTS), to_conversation("react", t.value, OPTS)
        assert a.as_chat() == b.as_chat() and a.task_type == b.task_type


def test_memoized_kind_guess_equals_detecting_each_row() -> None:
    """``guess_kind`` is memoized by row shape: on rows of many shapes it must equal detecting each row."""
    import random

    from data_prep.formats import Columns, FormatOptions, _guess_kind, guess_kind

    keys = ["messages", "conversations", "instruction", "input", "output", "context", "response", "prompt",
            "completion", "chosen", "rejected", "label", "kto_tag", "question", "answer", "text", "system",
            "observation", "steps", "chosen_messages", "rejected_messages", "q", "a"]
    values = [None, "x", 1, True, False, [], {}, [{}], [{"from": "human"}], [{"role": "user"}], ["s"],
              [{"from": "gpt", "role": "x"}], {"from": "human"}]
    options = [FormatOptions(), FormatOptions(question_field="q", answer_field="a"),
               FormatOptions(columns=Columns(kto_tag="label")), FormatOptions(text_field="prompt")]
    rng = random.Random(0)
    kinds = set()
    for _ in range(4000):
        row = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, 5))}
        for opts in options:
            kind = guess_kind(row, opts)
            assert kind == _guess_kind(row, opts), (row, opts)
            kinds.add(kind)
    assert {None, "sft", "text", "preference", "unpaired_preference"} <= kinds
