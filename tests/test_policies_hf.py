"""The batched hf policy: same greedy actions batched and one at a time, and KV-cache reuse that pays."""

from __future__ import annotations

import pytest
import torch
from tiny import make_tokenizer, tiny_model

from data_prep.react import react_messages
from data_prep.render import render_prompt
from eval.household import HouseholdEnv, generate_scenes
from eval.policies.hf import HFPolicy, common_prefix_len
from eval.runner import parse_action, run_episodes
from models.decode_attention import SWITCH

MAX_NEW = 8


@pytest.fixture(scope="module", params=[("smollm2", "llama"), ("qwen2_5", "qwen2")], ids=["llama", "qwen2"])
def tiny(request):
    template, family = request.param
    tok = make_tokenizer(template)
    # A tied 2-layer random model with the default init only ever predicts "\n", and with untied but small
    # weights every episode gets the same text. Untied and a wider init: varied replies per episode.
    return tiny_model(tok, family=family, tie_word_embeddings=False, initializer_range=0.2), tok


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes("valid_unseen", n=5)


def _uneven_env(scenes):
    """Episodes end after 2..4 steps, so a batch mixes episodes at different turns."""
    limits = {id(s): 2 + i % 3 for i, s in enumerate(scenes)}
    return lambda scene, grammar, max_steps: HouseholdEnv(scene, grammar, max_steps=limits[id(scene)])


def _run(model, tok, scenes, batch_size, reuse=True, stats=None, continuous=True):
    policy = HFPolicy(model, tok, max_new_tokens=MAX_NEW, reuse_cache=reuse)
    results = run_episodes(
        policy, scenes, batch_size=batch_size, make_env=_uneven_env(scenes), progress=False, continuous=continuous
    )
    if stats is not None:
        stats.update(policy.stats)
    return results


def test_batched_equals_unbatched_greedy(tiny, scenes):
    model, tok = tiny
    one = _run(model, tok, scenes, batch_size=1, continuous=False)
    for continuous, bs in ((False, 3), (False, 5), (True, 1), (True, 3), (True, 5)):
        stats: dict[str, int] = {}
        many = _run(model, tok, scenes, batch_size=bs, stats=stats, continuous=continuous)
        if bs == 3 and not continuous:  # refills put a fresh first prompt beside short turns: encoded apart
            assert stats["split_prefills"] > 0
        assert [r.replies for r in many] == [r.replies for r in one]
        assert [r.actions for r in many] == [r.actions for r in one]
        assert [r.tokens_encoded for r in many] == [r.tokens_encoded for r in one]
    assert len({tuple(r.replies) for r in one}) > 1  # the episodes really differ
    assert len({r.steps for r in one}) >= 2  # episodes end at different turns, so batches mix turns


def test_rows_that_stop_early_leave_the_batch_without_changing_actions(tiny, scenes):
    """With every 5th token id as a stop token, replies end at different lengths within one batch."""
    model, tok = tiny
    stops = range(0, len(tok), 5)

    def run(bs):
        policy = HFPolicy(model, tok, max_new_tokens=MAX_NEW, extra_stop_ids=stops)
        return run_episodes(policy, scenes, batch_size=bs, make_env=_uneven_env(scenes), progress=False)

    one, many = run(1), run(5)
    lengths = {len(tok(r, add_special_tokens=False)["input_ids"]) for res in one for r in res.replies}
    assert len(lengths) > 2  # replies of several lengths, so rows left the batch at different steps
    assert [r.replies for r in many] == [r.replies for r in one]
    assert [r.tokens_encoded for r in many] == [r.tokens_encoded for r in one]


def test_actions_match_plain_generate_on_the_full_chat(tiny, scenes):
    """Reference: transformers' own greedy generate, re-encoding the whole chat each turn."""
    model, tok = tiny
    (res,) = _run(model, tok, scenes[1:2], batch_size=1)
    env = HouseholdEnv(scenes[1])
    first, steps = env.reset(), []
    for action, reply in zip(res.actions, res.replies, strict=True):
        ids = render_prompt(tok, react_messages(first, steps))
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=MAX_NEW, do_sample=False,
            )
        text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
        assert text.startswith(reply) or reply.startswith(text.split("\n")[0])
        # a reply cut at max_new_tokens before its first line ends is a format error (no action)
        assert parse_action(text) == action or (action == "" and "\n" not in text.strip())
        steps.append((action, env.step(action)[0]))


def test_cache_reuse_encodes_fewer_tokens_with_the_same_actions(tiny, scenes):
    model, tok = tiny
    reuse = _run(model, tok, scenes, batch_size=5, reuse=True)
    full = _run(model, tok, scenes, batch_size=5, reuse=False)
    assert [r.actions for r in reuse] == [r.actions for r in full]
    for a, b in zip(reuse, full, strict=True):
        assert a.tokens_encoded < b.tokens_encoded
    # Full re-encode grows quadratically: the first turn costs the same, later turns much less with reuse.
    assert sum(r.tokens_encoded for r in full) > 1.5 * sum(r.tokens_encoded for r in reuse)


def test_chat_template_prefix_property_for_well_formed_replies(any_tokenizer):
    """[..., reply, obs] renders as prev prompt + reply tokens + end of turn + new tokens (ChatML, Llama 3)."""
    tok = any_tokenizer
    first = "You are in the middle of a room. Looking quickly around you, you see a fridge 1.\n\nYour task is to: put a apple in fridge."
    prev = render_prompt(tok, react_messages(first, [("go to fridge 1", "The fridge 1 is closed.")]))
    nxt = render_prompt(tok, react_messages(first, [("go to fridge 1", "The fridge 1 is closed."), ("open fridge 1", "You open the fridge 1.")]))
    reply = tok("open fridge 1", add_special_tokens=False)["input_ids"]
    keep = common_prefix_len(prev + reply, nxt)
    if tok.chat_template and "[INST]" in tok.chat_template:
        assert keep > 0  # Mistral-style templates may move the system text; the policy then re-encodes the tail
    else:
        assert keep == len(prev) + len(reply)
        assert nxt[keep] == tok.convert_tokens_to_ids(tok.eos_token)


def test_misses_are_repaired_not_wrong(scenes):
    """A multi-line reply breaks the prefix; the cache is cut back and the next turn is still exact."""
    tok = make_tokenizer("smollm2")
    model = tiny_model(tok, tie_word_embeddings=False, initializer_range=0.2, seed=1)
    policy = HFPolicy(model, tok, max_new_tokens=MAX_NEW)
    (res,) = run_episodes(policy, scenes[:1], make_env=_uneven_env(scenes), progress=False)
    ref = HFPolicy(model, tok, max_new_tokens=MAX_NEW, reuse_cache=False)
    (res_ref,) = run_episodes(ref, scenes[:1], make_env=_uneven_env(scenes), progress=False)
    assert res.actions == res_ref.actions


def test_long_contexts_attending_alone_keep_the_actions(tiny, scenes, monkeypatch):
    """Every decoding step sends its longest one-token segments to attention calls of their own (the path
    the cost model picks when one episode's context is much longer than the others'); the greedy actions
    must not change."""
    from eval.policies import slot_cache

    model, tok = tiny
    one = _run(model, tok, scenes, batch_size=1, continuous=False)
    alone_counts = []

    def longest_alone(singles, slots):
        ordered = sorted(singles, key=lambda seg: seg.start)
        k = (len(ordered) + 1) // 2
        alone_counts.append(len(ordered) - k)
        return ordered[:k], ordered[k:]

    monkeypatch.setenv(SWITCH, "0")  # the split is the SDPA path's; the decode kernel needs none
    monkeypatch.setattr(slot_cache, "_split_singles", longest_alone)
    many = _run(model, tok, scenes, batch_size=5)
    assert sum(alone_counts) > 0
    assert [r.actions for r in many] == [r.actions for r in one]
    assert [r.replies for r in many] == [r.replies for r in one]


@pytest.mark.parametrize("kernel", ["1", "0"], ids=["decode-kernel", "sdpa"])
def test_continuous_batching_keeps_the_actions_with_either_attention(tiny, scenes, monkeypatch, kernel):
    """The decoding steps' attention (the CPU decode kernel, or SDPA where it cannot be built) must not
    change what a batch of 5 episodes says, against one episode at a time on the padded path."""
    model, tok = tiny
    one = _run(model, tok, scenes, batch_size=1, continuous=False)
    monkeypatch.setenv(SWITCH, kernel)
    many = _run(model, tok, scenes, batch_size=5)
    assert [r.replies for r in many] == [r.replies for r in one]


def test_split_singles_sends_only_a_long_outlier_alone():
    from eval.policies.slot_cache import Segment, _split_singles

    segs = [Segment(i, start, i, i + 1) for i, start in enumerate([400, 420, 390, 410, 2400, 405, 415, 395])]
    batched, alone = _split_singles(segs, 8)
    assert [s.start for s in alone] == [2400]
    even = [Segment(i, 400 + i, i, i + 1) for i in range(8)]
    assert _split_singles(even, 8) == (even, [])
