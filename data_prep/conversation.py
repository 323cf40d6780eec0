"""The canonical conversation every reader produces and every later stage consumes.

A ``Conversation`` is a list of OpenAI-style messages plus metadata. It serialises to one JSON
object per line in ``train.jsonl`` / ``test.jsonl``, by :data:`KINDS` (one kind per file):

- ``sft`` (no ``kind`` key: the rows of every release so far)::

    {"messages": [{"role": "system", "content": "..."}, ...], "source": "data/qa.jsonl:12",
     "task_type": "pick_and_place_simple", "tags": ["fish"], "tools": null}

  An assistant message may carry ``"loss_weight": 0`` (shown, not trained) and ``"reasoning_content"``
  (its reasoning trace; :mod:`data_prep.render` places it the way the chat template expects).
- ``text`` (continued pretraining): ``{"kind": "text", "text": "...", "source": ...}``;
- ``preference`` (DPO/ORPO): ``{"kind": "preference", "prompt": [...], "chosen": [...], "rejected": [...],
  "source": ..., "tools": ...}``; ``chosen``/``rejected`` are the assistant message(s) after the prompt;
- ``unpaired_preference`` (KTO): ``{"kind": "unpaired_preference", "prompt": [...], "completion": [...],
  "label": true, "source": ...}``.

For the two preference kinds ``messages`` holds the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
KINDS = ("sft", "text", "preference", "unpaired_preference")


@dataclass
class Message:
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    name: str | None = None  # tool name for role == "tool"
    reasoning_content: str | None = None  # an assistant's reasoning trace (rendered per the chat template)
    loss_weight: float | None = None  # 0: shown to the model, not trained; None: the default (trained if assistant)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = self.tool_calls
        if self.name:
            d["name"] = self.name
        if self.reasoning_content:
            d["reasoning_content"] = self.reasoning_content
        if self.loss_weight == 0:  # only the exception is written: rows without it stay as they always were
            d["loss_weight"] = 0
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        return cls(role=d["role"], content=d.get("content") or "", tool_calls=d.get("tool_calls"), name=d.get("name"),
                   reasoning_content=d.get("reasoning_content") or None, loss_weight=d.get("loss_weight"))


@dataclass
class Conversation:
    messages: list[Message]
    source: str = ""  # "file:line" or "file:index": where the row came from
    task_type: str | None = None  # ReAct task type, or any stratification key
    tags: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None  # function schemas offered to the model
    kind: str = "sft"  # one of KINDS
    text: str = ""  # kind "text"
    chosen: list[Message] = field(default_factory=list)  # kind "preference"
    rejected: list[Message] = field(default_factory=list)
    completion: list[Message] = field(default_factory=list)  # kind "unpaired_preference"
    label: bool | None = None
    # ShareGPT data may answer a tool call written as text in the assistant turn (LLaMA-Factory accepts
    # an observation after any assistant turn); not written out.
    free_tool_calls: bool = False

    def to_dict(self, chat: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The ``train.jsonl`` row; ``chat`` is :meth:`as_chat` when the caller already has it."""
        if self.kind != "sft":
            return self._kind_dict()
        d: dict[str, Any] = {"messages": self.as_chat() if chat is None else chat, "source": self.source}
        if self.task_type:
            d["task_type"] = self.task_type
        if self.tags:
            d["tags"] = list(self.tags)
        if self.tools:
            d["tools"] = self.tools
        return d

    def _kind_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "text":
            d["text"] = self.text
        else:
            # A prompt is never trained: its replies need no loss_weight to say so.
            d["prompt"] = [{k: v for k, v in m.items() if k != "loss_weight"} for m in self.as_chat()]
            if self.kind == "preference":
                d["chosen"] = [m.to_dict() for m in self.chosen]
                d["rejected"] = [m.to_dict() for m in self.rejected]
            else:
                d["completion"] = [m.to_dict() for m in self.completion]
                d["label"] = self.label
        d["source"] = self.source
        if self.task_type:
            d["task_type"] = self.task_type
        if self.tags:
            d["tags"] = list(self.tags)
        if self.tools and self.kind != "text":
            d["tools"] = self.tools
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conversation:
        kind = d.get("kind", "sft")
        msgs = d.get("prompt", []) if kind in ("preference", "unpaired_preference") else d.get("messages", [])

        def many(key: str) -> list[Message]:
            return [Message.from_dict(m) for m in d.get(key) or []]

        return cls(
            messages=[Message.from_dict(m) for m in msgs],
            source=d.get("source", ""),
            task_type=d.get("task_type"),
            tags=list(d.get("tags") or []),
            tools=d.get("tools"),
            kind=kind,
            text=d.get("text", ""),
            chosen=many("chosen"),
            rejected=many("rejected"),
            completion=many("completion"),
            label=d.get("label"),
        )

    def as_chat(self) -> list[dict[str, Any]]:
        """Messages in the form ``tokenizer.apply_chat_template`` takes (the prompt, for preference kinds)."""
        return [m.to_dict() for m in self.messages]

    def sequences(self) -> list[list[Message]]:
        """The chats this row trains on: the conversation, or the prompt followed by each completion."""
        if self.kind == "preference":
            return [self.messages + self.chosen, self.messages + self.rejected]
        if self.kind == "unpaired_preference":
            return [self.messages + self.completion]
        if self.kind == "text":
            return []
        return [self.messages]


@dataclass
class Reject:
    """A row that was not used, and why. Written to ``rejects.jsonl``."""

    source: str
    reason: str
    row: Any = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "reason": self.reason, "row": self.row}
        if self.detail:
            d["detail"] = self.detail
        return d
