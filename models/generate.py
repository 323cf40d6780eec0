"""One way to make a reply with a transformers model: training's samples, chat_eval and deploy.chat use it.

The decoding settings are the scenario's, the same ones ``deploy.modelfile`` writes into the Modelfile, so a
reply printed after training is decoded the way Ollama will decode the exported model:

- ``react``: greedy (actions must be exact);
- ``roleplay``: temperature 0.8, top-p 0.9, repeat penalty 1.1;
- ``qa``: temperature 0.3, top-p 0.9, repeat penalty 1.05;
- anything else: temperature 0.7, top-p 0.9.

Sampled replies take a seed, so a run's samples (and base vs tuned comparisons) are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# End-of-turn tokens of the chat templates we know (ChatML, Llama 3, Phi, Gemma, Mistral/Llama 2).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>", "<end_of_turn>", "<|eom_id|>")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def ollama_params(self) -> dict[str, float | int]:
        """The Modelfile PARAMETER lines this decoding needs (Ollama's names, in a stable order)."""
        params: dict[str, float | int] = {"temperature": self.temperature}
        for key in ("top_k", "top_p", "repeat_penalty"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        return params

    def describe(self) -> str:
        if self.greedy:
            return "greedy"
        parts = [f"temperature {self.temperature:g}"]
        parts += [f"{k} {getattr(self, k):g}" for k in ("top_p", "top_k", "repeat_penalty") if getattr(self, k)]
        return ", ".join(parts)


GREEDY = Sampling()
SCENARIO_SAMPLING: dict[str, Sampling] = {
    "react": Sampling(0.0, top_p=1.0, top_k=1, repeat_penalty=1.0),
    "roleplay": Sampling(0.8, top_p=0.9, repeat_penalty=1.1),
    "qa": Sampling(0.3, top_p=0.9, repeat_penalty=1.05),
}
DEFAULT_SAMPLING = Sampling(0.7, top_p=0.9)


def scenario_kind(scenario: str | None) -> str | None:
    """``react`` / ``roleplay`` / ``qa`` from a scenario or run name (``roleplay-cpu-demo`` -> ``roleplay``)."""
    s = (scenario or "").lower()
    for kind in ("react", "roleplay", "qa"):
        if kind in s:
            return kind
    return None


def sampling_for(scenario: str | None) -> Sampling:
    return SCENARIO_SAMPLING.get(scenario_kind(scenario) or "", DEFAULT_SAMPLING)


def stop_token_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """End-of-turn and eos ids: the tokenizer's eos, the generation config's eos, known end-of-turn tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(int(x) for x in gen_eos)
    vocab = tokenizer.get_vocab()
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    for tok in END_OF_TURN_TOKENS:
        if tok in vocab and tok in specials:
            ids.add(int(vocab[tok]))
    return ids


def _decoding_kwargs(sampling: Sampling) -> dict[str, Any]:
    if sampling.greedy:
        kwargs: dict[str, Any] = {"do_sample": False}
    else:
        kwargs = {"do_sample": True, "temperature": sampling.temperature}
        if sampling.top_p is not None:
            kwargs["top_p"] = sampling.top_p
        if sampling.top_k:
            kwargs["top_k"] = sampling.top_k
    if sampling.repeat_penalty not in (None, 1.0):
        kwargs["repetition_penalty"] = sampling.repeat_penalty
    return kwargs


def generate_reply(
    model: Any, tokenizer: Any, messages: list[dict[str, Any]], max_new_tokens: int,
    sampling: Sampling = GREEDY, seed: int = 0, on_text: Callable[[str], None] | None = None,
) -> str:
    """The assistant's next reply to ``messages`` (rendered with the chat template, generation prompt on).

    ``on_text`` receives the reply's text piece by piece while it is generated (a chat that streams).
    """
    import torch

    from data_prep.render import render_prompt

    ids = render_prompt(tokenizer, messages)
    stops = sorted(stop_token_ids(tokenizer, model))
    device = getattr(model, "device", None) or "cpu"
    was_training = model.training
    model.eval()
    if not sampling.greedy:
        torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([ids], device=device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
                streamer=_Streamer(tokenizer, on_text) if on_text is not None else None,
                **_decoding_kwargs(sampling),
            )
    finally:
        if was_training:
            model.train()
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()


class _Streamer:
    """transformers' streamer protocol (``put`` / ``end``): decodes the new tokens so far, hands on the new text.

    Decoding the whole reply each time (not token by token) keeps multi-byte characters whole.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.prompt_seen = False
        self.shown = ""

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).lstrip()
        if text.startswith(self.shown) and not text.endswith("\ufffd") and len(text) > len(self.shown):
            self.on_text(text[len(self.shown):])
            self.shown = text

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()
        if text.startswith(self.shown) and len(text) > len(self.shown):
            self.on_text(text[len(self.shown):])

