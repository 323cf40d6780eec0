"""A transformers causal LM as a ReAct policy: batched greedy decoding with a KV cache kept per episode.

Design (simplicity over cleverness):

- Each episode keeps, in ``state.memory``, the token ids it has fed to the model so far and their KV
  cache, *unpadded* (one ``[1, heads, len, dim]`` key and value tensor per layer).
- Each turn the full chat is rendered with ``data_prep.render.render_prompt`` (the generation-prompt
  ids, exactly as in training). The longest common prefix with the cached ids is kept; the cache is
  cropped to it and only the rest is encoded. When the template renders ``[..., reply, obs]`` as
  ``prev_prompt + generated + end-of-turn + new``, the prefix is everything cached and only the new
  tokens are encoded; when it does not (a reply with a second line, a re-tokenised word, a template that
  rewrites earlier turns), the cache is cut back to where the ids first differ, so the re-encode is
  exact, and never wrong. ``reuse_cache=False`` re-encodes the whole chat every turn, for comparison.
- A batch of episodes is decoded together: each episode's cache is left-padded to the longest one, its
  new tokens are left-padded to the longest new block, and the padding slots are masked out. Position ids
  are passed explicitly so every real token keeps its own position. A row that finishes its reply leaves
  the batch at once (its real slots are gathered back into an unpadded cache), so the other rows do not
  carry it through later decoding steps. Masked slots get zero attention weight, so batched and
  one-at-a-time decoding compute the same logits up to float rounding of differently shaped matmuls; in
  fp32 they pick the same greedy tokens (tested). bfloat16 is faster on CPUs with AMX but rounds more.
- What every chat starts with (the system prompt and the user header) is encoded once per policy and
  each new episode starts from that cache; those tokens count in ``stats["shared_prefix_tokens"]``, not
  in any episode's ``tokens_encoded``.
- A row whose new block is much longer than the batch's median (a fresh episode's whole first prompt,
  when the runner refills the batch) is encoded alone first, except for its last token, so it does not
  pad every other row to its length.
- Decoding stops at an end-of-turn/eos token, after ``max_new_tokens``, or once the reply holds a
  complete first line (the action is the first non-empty line, so later lines cannot change it). A reply
  stopped by the limit mid-line (endless text, no newline) is marked ``truncated``: the runner counts it as
  a format error. Special tokens are never part of a reply's text, so a model emitting only those replies "".
- On a CPU the model's plain linear layers take ``models.cpu_linear``'s small-batch forward (``W @ x^T`` for
  the few rows of a decoding step: 818 s -> 716 s on the full tuned ``valid_unseen`` run), and the
  continuous batcher's decoding steps attend through ``models.decode_attention``'s one-pass kernel
  (compiled once; SDPA where no C++ compiler is found).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.policies.base import EpisodeState, PolicyError, Reply
from models.cpu_linear import use_small_batch_linear
from models.generate import stop_token_ids

GQA_ATTENTION = "sdpa_gqa"

MEMORY_KEY = "hf"


@dataclass
class _EpisodeCache:
    ids: list[int] = field(default_factory=list)
    kv: list[tuple[Any, Any]] | None = None  # per layer (keys, values), each [1, heads, len(ids), dim]
    turns: int = 0
    prefix_misses: int = 0  # turns where the cached ids were not a prefix of the new prompt


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _default_render(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    from data_prep.render import render_prompt

    return list(render_prompt(tokenizer, messages))


def _sdpa_gqa_forward(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
    scaling: float | None = None, is_causal: bool | None = None, **_: Any,
) -> tuple[Any, None]:
    """SDPA that lets torch share key/value heads (``enable_gqa``) even under a padding mask.

    transformers' own sdpa path repeats the key/value heads whenever a mask is given on CPU, which makes a
    padded batch read every cached key and value ``heads / kv_heads`` times per decoding step: for a batch of
    long ReAct chats that copy costs more than the weights. Same math, no copy.
    """
    import torch

    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    causal = mask is None and query.shape[2] > 1 and (is_causal if is_causal is not None else True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def use_gqa_attention(model: Any) -> bool:
    """Switch a CPU model with grouped-query attention to :func:`_sdpa_gqa_forward`; True if switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    cfg = model.config
    kv, heads = getattr(cfg, "num_key_value_heads", None), getattr(cfg, "num_attention_heads", None)
    if model.device.type != "cpu" or not kv or kv == heads or cfg._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(GQA_ATTENTION, _sdpa_gqa_forward)
    AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)
    model.set_attn_implementation(GQA_ATTENTION)
    return True


class HFPolicy:
    """Greedy ReAct policy over a transformers causal LM (base, base + adapter, or merged)."""

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 48,
        reuse_cache: bool = True,
        stop_at_first_line: bool = True,
        render: Callable[[Any, list[dict[str, str]]], list[int]] | None = None,
        extra_stop_ids: Iterable[int] = (),
    ) -> None:
        self.model = model.eval()
        use_gqa_attention(self.model)
        use_small_batch_linear(self.model)  # the decoding slots' few rows: a faster BLAS call on CPUs
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.reuse_cache = reuse_cache
        self.stop_at_first_line = stop_at_first_line
        self.render = render or _default_render
        self.stop_ids = stop_token_ids(tokenizer, model) | {int(t) for t in extra_stop_ids}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.stats: dict[str, int] = {"turns": 0, "prefix_misses": 0, "split_prefills": 0, "shared_prefix_tokens": 0,
                                      "packed_prefill_steps": 0}
        self._shared: dict[str, tuple[list[int], list[tuple[Any, Any]] | None]] = {}  # system prompt -> prefix

    @classmethod
    def load(
        cls, model: str, adapter: str | None = None, *, dtype: str = "float32", allow_pickle: bool = False,
        **kwargs: Any,
    ) -> HFPolicy:
        """Load ``model`` (registry name, folder or Hub id) with an optional PEFT adapter merged in.

        ``dtype`` "float32" (default: reproducible greedy decoding) or "bfloat16" (much faster batched decoding
        on CPUs with AMX/AVX512-BF16, and on GPUs). Pickle weights are refused unless ``allow_pickle``.
        """
        from models.loading import load_model

        try:
            lm, tokenizer = load_model(model, adapter, dtype=dtype, merge=True, allow_pickle=allow_pickle)
        except FileNotFoundError as exc:
            raise PolicyError(str(exc)) from None
        return cls(lm, tokenizer, **kwargs)

    def act_continuous(self, feed: Any, batch_size: int) -> None:
        """Play every episode of the runner's ``feed`` with token-level continuous batching
        (:mod:`eval.policies.continuous`): a finished reply frees its slot at once."""
        from eval.policies.continuous import ContinuousDecoder

        ContinuousDecoder(self, feed, batch_size).run()

    # -- one turn for many episodes ------------------------------------------------------------------

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        rows: list[tuple[_EpisodeCache, list[int], list[int]]] = []  # (cache, full prompt, new ids)
        for state in states:
            mem: _EpisodeCache = state.memory.setdefault(MEMORY_KEY, _EpisodeCache())
            messages = state.messages()
            prompt = self.render(self.tokenizer, messages)
            if self.reuse_cache and mem.turns == 0 and not mem.ids:
                shared_ids, shared_kv = self._shared_prefix(messages)
                p = min(common_prefix_len(shared_ids, prompt), len(prompt) - 1)
                if p and shared_kv is not None:
                    mem.ids, mem.kv = shared_ids[:p], [(k[:, :, :p], v[:, :, :p]) for k, v in shared_kv]
            keep = common_prefix_len(mem.ids, prompt) if self.reuse_cache else 0
            keep = min(keep, len(prompt) - 1)  # at least one token must be fed to get next-token logits
            if self.reuse_cache and mem.turns and keep < len(mem.ids):
                mem.prefix_misses += 1
                self.stats["prefix_misses"] += 1
            if keep == 0:
                mem.kv, mem.ids = None, []
            elif keep < len(mem.ids):
                mem.kv = [(k[:, :, :keep], v[:, :, :keep]) for k, v in mem.kv or []]
                mem.ids = mem.ids[:keep]
            mem.turns += 1
            self.stats["turns"] += 1
            rows.append((mem, prompt, prompt[keep:]))
        # A long new block (a fresh episode's whole first prompt) would pad every other row to its length.
        # Encode all but its last token alone first; the shared pass then feeds it one token.
        prefilled = [0] * len(rows)
        if len(rows) > 1:
            lengths = sorted(len(new) for _, _, new in rows)
            limit = 2 * lengths[len(lengths) // 2] + 16
            for i, (mem, prompt, new) in enumerate(rows):
                if len(new) > limit:
                    mem.kv = self._prefill(mem.kv, len(mem.ids), new[:-1])
                    mem.ids = mem.ids + new[:-1]
                    prefilled[i] = len(new) - 1
                    rows[i] = (mem, prompt, new[-1:])
                    self.stats["split_prefills"] += 1
        generated, fed = self._decode([(m.kv, len(m.ids), new) for m, _, new in rows])
        replies = []
        for (mem, prompt, new), (gen, kv), n_gen_fed, n_pre in zip(rows, generated, fed, prefilled, strict=True):
            if self.reuse_cache:
                mem.ids, mem.kv = prompt + gen[:n_gen_fed], kv
            else:
                mem.ids, mem.kv = [], None
            text = self.tokenizer.decode([t for t in gen if t not in self.stop_ids], skip_special_tokens=True)
            replies.append(Reply(text=text, tokens_encoded=n_pre + len(new) + n_gen_fed, truncated=self.cut_off(gen)))
        return replies

    def cut_off(self, generated: list[int]) -> bool:
        """The reply ran into ``max_new_tokens`` with no stop token and no complete first line."""
        return (len(generated) >= self.max_new_tokens and generated[-1] not in self.stop_ids
                and not self._first_line_done(generated))

    def _shared_prefix(self, messages: list[dict[str, str]]) -> tuple[list[int], list[tuple[Any, Any]] | None]:
        """Ids and KV cache of what every chat with this system prompt starts with (encoded once)."""
        system = messages[0] if messages and messages[0]["role"] == "system" else None
        key = system["content"] if system else ""
        if key not in self._shared:
            head = [system] if system else []
            a = self.render(self.tokenizer, [*head, {"role": "user", "content": "a"}])
            b = self.render(self.tokenizer, [*head, {"role": "user", "content": "b"}])
            ids = a[: common_prefix_len(a, b)]
            kv = self._prefill(None, 0, ids) if ids else None
            self.stats["shared_prefix_tokens"] += len(ids)
            self._shared[key] = (ids, kv)
        return self._shared[key]

    def _prefill(self, kv: list[tuple[Any, Any]] | None, n: int, ids: list[int]) -> list[tuple[Any, Any]]:
        """Extend one episode's unpadded cache by ``ids`` (no sampling)."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([ids], dtype=torch.long),
                attention_mask=torch.ones((1, n + len(ids)), dtype=torch.long),
                position_ids=torch.arange(n, n + len(ids))[None],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return [(layer.keys, layer.values) for layer in out.past_key_values.layers]

    def _first_line_done(self, ids: list[int]) -> bool:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return "\n" in text.lstrip()

    def _decode(
        self, rows: list[tuple[list[tuple[Any, Any]] | None, int, list[int]]]
    ) -> tuple[list[tuple[list[int], list[tuple[Any, Any]]]], list[int]]:
        """Greedy-decode one reply per row. Returns ((generated ids, new unpadded cache) per row, fed counts).

        A row is ``(cache or None, cache length, new ids)``. The last generated id is never fed.
        """
        import torch

        b = len(rows)
        lmax = max(n for _, n, _ in rows)
        nmax = max(len(new) for _, _, new in rows)
        cache = _left_padded_cache(rows, lmax)
        input_ids, mask, positions, next_pos = _left_padded_inputs(rows, lmax, nmax, self.pad_id)

        generated: list[list[int]] = [[] for _ in rows]
        fed = [0] * b
        caches: list[list[tuple[Any, Any]]] = [[] for _ in rows]
        active = list(range(b))  # original row of each batch position; finished rows leave the batch
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            for step in range(self.max_new_tokens):
                cache = out.past_key_values
                tokens = out.logits[:, -1, :].argmax(dim=-1).tolist()
                keep = []
                for j, row in enumerate(active):
                    generated[row].append(int(tokens[j]))
                    done = int(tokens[j]) in self.stop_ids or step == self.max_new_tokens - 1
                    if not done and self.stop_at_first_line:
                        done = self._first_line_done(generated[row])
                    if done:  # gather this row's real slots into its own unpadded cache
                        idx = mask[j].nonzero().squeeze(-1)
                        caches[row] = [
                            (layer.keys[j : j + 1].index_select(2, idx), layer.values[j : j + 1].index_select(2, idx))
                            for layer in cache.layers
                        ]
                    else:
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(active):
                    sel = torch.tensor(keep, dtype=torch.long)
                    cache.batch_select_indices(sel)
                    mask, next_pos = mask[sel], next_pos[sel]
                    tokens = [tokens[j] for j in keep]
                    active = [active[j] for j in keep]
                for row in active:
                    fed[row] += 1
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
                out = self.model(
                    input_ids=torch.tensor(tokens, dtype=torch.long)[:, None],
                    attention_mask=mask,
                    position_ids=next_pos[:, None].clone(),
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                next_pos = next_pos + 1
        return list(zip(generated, caches, strict=True)), fed


def _left_padded_cache(rows: list[tuple[Any, int, list[int]]], lmax: int) -> Any:
    """One DynamicCache for the batch: each row's cached keys/values left-padded with zeros to ``lmax``."""
    import torch
    from transformers import DynamicCache

    if not lmax:
        return DynamicCache()
    ref = next(kv for kv, n, _ in rows if n == lmax)
    layers = []
    for layer in range(len(ref)):
        ks, vs = [], []
        for kv, n, _ in rows:
            shape = list(ref[layer][0].shape)
            shape[2] = lmax - n
            k = ref[layer][0].new_zeros(shape)
            v = ref[layer][1].new_zeros(shape[:3] + [ref[layer][1].shape[3]])
            ks.append(torch.cat([k, kv[layer][0]], dim=2) if n else k)
            vs.append(torch.cat([v, kv[layer][1]], dim=2) if n else v)
        layers.append((torch.cat(ks, dim=0), torch.cat(vs, dim=0)))
    return DynamicCache(ddp_cache_data=layers)


def _left_padded_inputs(rows: list[tuple[Any, int, list[int]]], lmax: int, nmax: int, pad_id: int) -> tuple[Any, ...]:
    """(input_ids, attention mask over cache + new ids, position ids, each row's next position)."""
    import torch

    b = len(rows)
    input_ids = torch.full((b, nmax), pad_id, dtype=torch.long)
    mask = torch.zeros((b, lmax + nmax), dtype=torch.long)
    positions = torch.zeros((b, nmax), dtype=torch.long)
    for i, (_, n, new) in enumerate(rows):
        k = len(new)
        input_ids[i, nmax - k :] = torch.tensor(new, dtype=torch.long)
        mask[i, lmax - n : lmax] = 1
        mask[i, lmax + nmax - k :] = 1
        positions[i, nmax - k :] = torch.arange(n, n + k)
    next_pos = torch.tensor([n + len(new) for _, n, new in rows], dtype=torch.long)
    return input_ids, mask, positions, next_pos
