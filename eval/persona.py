"""Rule checks that a roleplay reply stays in character, from the character card's ``consistency`` object::

    "consistency": {"forbidden": ["As an AI", ...], "self_names": ["Lin Zhi", ...],
                    "must_not_claim": ["I am a bot", ...], "max_reply_chars": 300}

Each reply gets pass/fail with the reasons: an empty reply, a forbidden string (case-insensitive), a claim the
character must not make, a self-introduction with a name that is not one of ``self_names``, or a reply longer
than ``max_reply_chars``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Self-introductions: "my name is X", "call me X", "I'm X"/"I am X" (X capitalised), "我叫X", "我的名字是X".
_INTRO_EN = re.compile(r"\b(?i:my name is|call me|i am|i'm)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)")
_INTRO_EN_ANYCASE = re.compile(r"\b(?:my name is|call me)\s+([A-Za-z][\w'-]*(?:\s+[A-Z][\w'-]*)?)", re.IGNORECASE)
_INTRO_ZH = re.compile(r"(?:我叫|我的名字是|我的名字叫)\s*([\u4e00-\u9fffA-Za-z]{1,8})")
_NOT_NAMES = frozenset({"I", "A", "An", "The", "So", "Not", "Just", "Here", "Back", "Sorry", "Glad", "Happy", "Fine"})


def _norm(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").casefold()


@dataclass(frozen=True)
class PersonaRules:
    forbidden: tuple[str, ...] = ()
    self_names: tuple[str, ...] = ()
    must_not_claim: tuple[str, ...] = ()
    max_reply_chars: int | None = None

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> PersonaRules:
        """Read ``card["consistency"]``; raises ValueError naming the bad field."""
        rules = card.get("consistency")
        if not isinstance(rules, dict):
            raise ValueError("field 'consistency' must be an object with forbidden/self_names/must_not_claim")
        out: dict[str, Any] = {}
        for key in ("forbidden", "self_names", "must_not_claim"):
            value = rules.get(key, [])
            if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
                raise ValueError(f"field 'consistency.{key}' must be a list of non-empty strings")
            out[key] = tuple(value)
        limit = rules.get("max_reply_chars")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError("field 'consistency.max_reply_chars' must be a positive integer")
        return cls(max_reply_chars=limit, **out)


@dataclass
class PersonaCheck:
    passed: bool
    reasons: list[str] = field(default_factory=list)


def _foreign_name(candidate: str, self_names: Sequence[str]) -> bool:
    cand = _norm(candidate.strip())
    return not any(cand.startswith(_norm(n)) or _norm(n).startswith(cand) for n in self_names)


def check_reply(reply: str, rules: PersonaRules) -> PersonaCheck:
    reasons: list[str] = []
    text = reply.strip()
    if not text:
        return PersonaCheck(False, ["empty reply"])
    low = _norm(text)
    reasons += [f"forbidden: {s!r}" for s in rules.forbidden if _norm(s) in low]
    reasons += [f"claims: {s!r}" for s in rules.must_not_claim if _norm(s) in low]
    if rules.self_names:
        names = [m.group(1) for m in _INTRO_EN.finditer(text) if m.group(1).split()[0] not in _NOT_NAMES]
        names += [m.group(1) for m in _INTRO_EN_ANYCASE.finditer(text)]
        names += [m.group(1) for m in _INTRO_ZH.finditer(text)]
        for name in dict.fromkeys(names):
            if _foreign_name(name, rules.self_names):
                reasons.append(f"calls itself {name!r}, not one of {list(rules.self_names)}")
    if rules.max_reply_chars is not None and len(text) > rules.max_reply_chars:
        reasons.append(f"too long: {len(text)} > {rules.max_reply_chars} characters")
    return PersonaCheck(not reasons, reasons)


def persona_score(replies: Sequence[str], rules: PersonaRules) -> tuple[float, list[PersonaCheck]]:
    """Share of replies that pass, and the per-reply checks."""
    checks = [check_reply(r, rules) for r in replies]
    return (sum(c.passed for c in checks) / len(checks) if checks else 0.0), checks
