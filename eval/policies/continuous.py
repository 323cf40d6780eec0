"""Token-level continuous batching for the hf policy (``HFPolicy.act_continuous``).

Each of ``batch_size`` slots holds one running episode in a :class:`SlotCache`. Every iteration is one
packed forward pass (no padding): each replying slot feeds its last token, and each slot with a new block
of prompt tokens (a fresh episode, or the observation after a reply) feeds that block, whose last logits
give its first reply token.

A slot whose reply is done (end-of-turn token, a complete first line, or ``max_new_tokens``) hands it to the
runner's :class:`~eval.runner.EpisodeFeed` at once, which steps the environment; the slot then encodes
the observation at the next iteration (or takes the next queued episode), while the other slots keep
decoding. So no slot ever waits for the batch's longest reply, and no cache is rebuilt between turns.
Greedy choices are those of one-episode-at-a-time decoding up to float rounding (identical in fp32, tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from eval.policies.base import EpisodeState, Reply
from eval.policies.hf import common_prefix_len
from eval.policies.slot_cache import SLOT_ATTENTION, SlotCache, register_slot_attention

if TYPE_CHECKING:
    from eval.policies.hf import HFPolicy
    from eval.runner import EpisodeFeed


@dataclass
class _Slot:
    state: EpisodeState | None = None
    ids: list[int] = field(default_factory=list)  # token ids held in this slot's cache
    pending: list[int] = field(default_factory=list)  # what the next forward feeds
    generated: list[int] = field(default_factory=list)
    tokens: int = 0  # tokens fed for this turn (prompt block + generated)
    turns: int = 0


class ContinuousDecoder:
    def __init__(self, policy: HFPolicy, feed: EpisodeFeed, batch_size: int) -> None:
        self.p = policy
        self.feed = feed
        self.cache = SlotCache(policy.model, batch_size)
        self.slots = [_Slot() for _ in range(batch_size)]

    def run(self) -> None:
        register_slot_attention()
        model = self.p.model
        previous = model.config._attn_implementation
        model.set_attn_implementation(SLOT_ATTENTION)
        try:
            for i in range(len(self.slots)):
                self._fill(i)
            with torch.inference_mode():
                while any(s.state is not None for s in self.slots):
                    self._step()
        finally:
            model.set_attn_implementation(previous)

    # -- episodes in and out ------------------------------------------------------------------------
    def _fill(self, i: int) -> None:
        """Start the next queued episode in slot ``i`` (from the shared system-prompt cache), or leave it empty."""
        s = self.slots[i] = _Slot(state=self.feed.start())
        self.cache.lengths[i] = 0
        if s.state is None:
            return
        if self.p.reuse_cache:
            messages = s.state.messages()
            shared_ids, shared_kv = self.p._shared_prefix(messages)
            prompt = self.p.render(self.p.tokenizer, messages)
            n = min(common_prefix_len(shared_ids, prompt), len(prompt) - 1)
            if n and shared_kv is not None:
                self.cache.load(i, shared_kv, n)
                s.ids = shared_ids[:n]
            self._begin_turn(i, prompt)
        else:
            self._begin_turn(i)

    def _begin_turn(self, i: int, prompt: list[int] | None = None) -> None:
        """Render the episode's chat (unless given); keep the cached common prefix, queue the rest."""
        s = self.slots[i]
        assert s.state is not None
        if prompt is None:
            prompt = self.p.render(self.p.tokenizer, s.state.messages())
        keep = min(common_prefix_len(s.ids, prompt) if self.p.reuse_cache else 0, len(prompt) - 1)
        if s.turns and keep < len(s.ids):
            self.p.stats["prefix_misses"] += 1
        s.ids = prompt[:keep]
        self.cache.lengths[i] = keep  # a miss only shortens the slot: later positions are overwritten
        s.pending, s.generated, s.tokens = prompt[keep:], [], len(prompt) - keep
        s.turns += 1
        self.p.stats["turns"] += 1

    def _finish(self, i: int) -> None:
        s = self.slots[i]
        assert s.state is not None
        text = self.p.tokenizer.decode([t for t in s.generated if t not in self.p.stop_ids], skip_special_tokens=True)
        reply = Reply(text=text, tokens_encoded=s.tokens, truncated=self.p.cut_off(s.generated))
        if self.feed.reply(s.state, reply):
            self._begin_turn(i)
        else:
            self._fill(i)

    # -- decoding -----------------------------------------------------------------------------------
    def _step(self) -> None:
        """One packed forward: every running slot feeds what it has (a reply token or a prompt block)."""
        blocks = {i: s.pending for i, s in enumerate(self.slots) if s.state is not None and s.pending}
        if not blocks:
            return
        counts = {i: len(b) for i, b in blocks.items()}
        if any(n > 1 for n in counts.values()):
            self.p.stats["packed_prefill_steps"] += 1  # a prompt block rode along with the decoding slots
        segments, position_ids = self.cache.begin(counts)
        input_ids = torch.tensor([[t for b in blocks.values() for t in b]], dtype=torch.long)
        last = torch.tensor([seg.q1 - 1 for seg in segments], dtype=torch.long)
        out = self.p.model(
            input_ids=input_ids, position_ids=position_ids, past_key_values=self.cache, use_cache=True,
            logits_to_keep=last, slot_layout=segments,
        )
        self.cache.commit(counts)
        picks = out.logits[0].argmax(dim=-1).tolist()
        for i, b in blocks.items():
            self.slots[i].ids.extend(b)
        self._take(list(blocks), picks)

    def _take(self, rows: list[int], tokens: list[int]) -> None:
        """Append each row's new token; a row whose reply is complete is handed to the runner."""
        for i, tok in zip(rows, tokens, strict=True):
            s = self.slots[i]
            s.generated.append(int(tok))
            done = int(tok) in self.p.stop_ids or len(s.generated) >= self.p.max_new_tokens
            if not done and self.p.stop_at_first_line:
                done = self.p._first_line_done(s.generated)
            if done:
                s.pending = []
                self._finish(i)
            else:
                s.pending = [int(tok)]
                s.tokens += 1
