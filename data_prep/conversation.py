"""The canonical conversation every reader produces and every later stage consumes.

A ``Conversation`` is a list of OpenAI-style messages plus metadata. It serialises to one JSON
object per line in ``train.jsonl`` / ``test.jsonl``::

    {"messages": [{"role": "system", "content": "..."}, ...], "source": "data/qa.jsonl:12",
     "task_type": "pick_and_place_simple", "tags": ["fish"], "tools": null}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    name: str | None = None  # tool name for role == "tool"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = self.tool_calls
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        return cls(role=d["role"], content=d.get("content") or "", tool_calls=d.get("tool_calls"), name=d.get("name"))


@dataclass
class Conversation:
    messages: list[Message]
    source: str = ""  # "file:line" or "file:index": where the row came from
    task_type: str | None = None  # ReAct task type, or any stratification key
    tags: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None  # function schemas offered to the model

    def to_dict(self, chat: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The ``train.jsonl`` row; ``chat`` is :meth:`as_chat` when the caller already has it."""
        d: dict[str, Any] = {"messages": self.as_chat() if chat is None else chat, "source": self.source}
        if self.task_type:
            d["task_type"] = self.task_type
        if self.tags:
            d["tags"] = list(self.tags)
        if self.tools:
            d["tools"] = self.tools
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conversation:
        return cls(
            messages=[Message.from_dict(m) for m in d["messages"]],
            source=d.get("source", ""),
            task_type=d.get("task_type"),
            tags=list(d.get("tags") or []),
            tools=d.get("tools"),
        )

    def as_chat(self) -> list[dict[str, Any]]:
        """Messages in the form ``tokenizer.apply_chat_template`` takes."""
        return [m.to_dict() for m in self.messages]


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
