"""Checks on one canonical :class:`~data_prep.conversation.Conversation`, and the fixed reject reasons.

Every row that is not used ends in ``rejects.jsonl`` with one of :data:`REASONS` (duplicates are not
rejects; they go to ``duplicates.jsonl``).
"""

from __future__ import annotations

from data_prep.conversation import ROLES, Conversation

REASONS: dict[str, str] = {
    "invalid_json": "the line is not valid JSON",
    "invalid_utf8": "the line has bytes that are not UTF-8",
    "not_an_object": "the row is a JSON value but not an object",
    "missing_field": "a required field is missing",
    "wrong_type": "a field has the wrong type",
    "empty_content": "a message has empty or whitespace-only content",
    "null_content": "a message has null content",
    "unknown_role": "a message role is not system/user/assistant/tool (or the dataset's tags)",
    "bad_role_order": "roles are out of order (system first, user opens, assistant follows user or tool)",
    "no_final_assistant": "the conversation does not end with an assistant turn",
    "too_long": "longer than --max-chars, or than --max-length tokens with --overlong drop",
    "too_short": "shorter than --min-chars",
    "low_quality": "quality score below --quality-threshold",
    "over_balance_cap": "its task type/tag already has --balance-cap rows",
    "unsupported_format": "a row form we do not train on (preference/KTO/multimodal, non-text content)",
    "render_error": "the tokenizer's chat template could not render the conversation",
    "nothing_to_train": "no turn to learn from (a prompt-only row, or loss_weight 0 on every assistant turn)",
    "wrong_stage": "a row kind the chosen --stage does not train on (text for pt, pairs for dpo/orpo, ...)",
    "same_chosen_rejected": "a preference pair whose chosen and rejected replies are the same",
}


class RowError(Exception):
    """One row is unusable: ``reason`` is a key of :data:`REASONS`, ``detail`` a sentence for people."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def validate(conv: Conversation) -> None:
    """Raise :class:`RowError` for the first problem found in ``conv`` (any kind)."""
    if conv.kind == "text":
        if not conv.text.strip():
            raise RowError("empty_content", "the text is empty")
        return
    if conv.kind == "preference":
        _validate_pair(conv)
        return
    if conv.kind == "unpaired_preference":
        if not isinstance(conv.label, bool):
            raise RowError("wrong_type", f"label is {type(conv.label).__name__}, expected true or false")
        _completion(conv, conv.completion, "completion")
        return
    _validate_chat(conv.messages, conv.free_tool_calls)
    if not any(m.role == "assistant" and m.loss_weight != 0 for m in conv.messages):
        raise RowError("nothing_to_train", "every assistant turn has loss_weight 0")


def _completion(conv: Conversation, side: list, what: str) -> None:
    """A completion: assistant (and tool) turns after a prompt that ends on a user or tool turn."""
    if not conv.messages:
        raise RowError("missing_field", "the prompt has no messages")
    if not side:
        raise RowError("missing_field", f"the {what} has no messages")
    if side[0].role != "assistant":
        raise RowError("bad_role_order", f"the {what} starts with a {side[0].role} message; it must be an "
                                         "assistant reply to the prompt")
    _validate_chat(conv.messages + side, conv.free_tool_calls)


def _validate_pair(conv: Conversation) -> None:
    _completion(conv, conv.chosen, "chosen reply")
    _completion(conv, conv.rejected, "rejected reply")
    if [m.to_dict() for m in conv.chosen] == [m.to_dict() for m in conv.rejected]:
        raise RowError("same_chosen_rejected", "chosen and rejected are the same reply: nothing to prefer")


def _validate_chat(msgs: list, free_tool_calls: bool = False) -> None:
    if not msgs:
        raise RowError("missing_field", "the conversation has no messages")
    prev: str | None = None
    prev_calls = False
    for i, m in enumerate(msgs):
        if not isinstance(m.role, str) or m.role not in ROLES:
            raise RowError("unknown_role", f"message {i} has role {m.role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m.content, str):
            raise RowError("wrong_type", f"message {i} ({m.role}) content is {type(m.content).__name__}, not a string")
        if m.tool_calls is not None and (m.role != "assistant" or not isinstance(m.tool_calls, list)):
            raise RowError("wrong_type", f"message {i} ({m.role}) has tool_calls; only assistant turns may, as a list")
        if not m.content.strip() and not (m.role == "assistant" and m.tool_calls):
            raise RowError("empty_content", f"message {i} ({m.role}) has empty content")
        if m.role == "system" and i != 0:
            raise RowError("bad_role_order", f"message {i} is a system message; only the first message may be one")
        if m.role == "user" and prev not in (None, "system", "assistant"):
            raise RowError("bad_role_order", f"message {i} (user) follows a {prev} message")
        if m.role == "assistant" and prev not in ("user", "tool"):
            raise RowError("bad_role_order", f"message {i} (assistant) follows {prev or 'nothing'}; a user turn must come first")
        if m.role == "tool" and not (prev == "tool" or (prev == "assistant" and (prev_calls or free_tool_calls))):
            raise RowError("bad_role_order", f"message {i} (tool) does not answer an assistant tool call")
        if m.role != "tool":
            prev_calls = bool(m.tool_calls)
        prev = m.role
    if prev != "assistant":
        raise RowError("no_final_assistant", f"the last message is a {prev} message; it must be an assistant turn")


def content_chars(conv: Conversation) -> int:
    """Characters of content over all messages of every part (tool-call arguments count as their JSON text)."""
    n = len(conv.text)
    for m in conv.messages + conv.chosen + conv.rejected + conv.completion:
        n += len(m.content) + len(m.reasoning_content or "")
        for call in m.tool_calls or ():
            n += len(str(call))
    return n
