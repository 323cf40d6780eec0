"""A GGUF model through llama-cpp-python as a ReAct policy (greedy, prompt-prefix reuse).

One ``llama_cpp.Llama`` instance per concurrent episode (a small pool, created on demand and handed back
when an episode ends). Each instance keeps its episode's tokens in its KV cache, so a turn only evaluates
the tokens after the longest common prefix of what the instance holds and the new prompt: normally the
previous reply's end-of-turn, the new observation and the generation prompt. A fresh episode on a reused
instance still reuses the shared system-prompt prefix.

Prompts are the same token ids as training: ``data_prep.render.render_prompt`` with a transformers
tokenizer built from the GGUF's own vocabulary and chat template (or one passed in).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.policies.base import EpisodeState, PolicyError, Reply
from eval.policies.hf import common_prefix_len
from models.generate import stop_token_ids

MEMORY_KEY = "llamacpp"


def _default_render(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    from data_prep.render import render_prompt

    return list(render_prompt(tokenizer, messages))


def resolve_gguf(model: str) -> Path:
    """A GGUF path, or a registry name whose package ships a GGUF."""
    p = Path(model).expanduser()
    if p.is_file():
        return p
    from models.registry import lookup, packaged_gguf

    spec = lookup(model)
    if spec is not None and spec.gguf_package:
        return packaged_gguf(spec)
    raise PolicyError(f"--model '{model}' is not a .gguf file (or a registry name with a packaged GGUF)")


def require_llama_cpp() -> None:
    """PolicyError with the install line when llama-cpp-python is missing (checked before any slow work)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise PolicyError("the llamacpp policy needs llama-cpp-python: pip install 'unsloth-recipes[llamacpp]'") from exc


class LlamaCppPolicy:
    name = "llamacpp"

    def __init__(
        self,
        model_path: str | Path,
        tokenizer: Any = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_new_tokens: int = 48,
        stop_at_first_line: bool = True,
        render: Callable[[Any, list[dict[str, str]]], list[int]] | None = None,
    ) -> None:
        require_llama_cpp()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise PolicyError(f"{self.model_path}: GGUF file not found")
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.model_path.parent), gguf_file=self.model_path.name)
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        self.n_threads = n_threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None
        self.max_new_tokens = max_new_tokens
        self.stop_at_first_line = stop_at_first_line
        self.render = render or _default_render
        self.stop_ids = stop_token_ids(tokenizer)
        self._free: list[Any] = []  # idle Llama instances
        self.instances = 0

    def _new_instance(self) -> Any:
        from deploy.llamacpp import load_llama

        self.instances += 1
        return load_llama(self.model_path, n_ctx=self.n_ctx, logits_all=False, n_batch=128, n_threads=self.n_threads)

    def close(self) -> None:
        """Free the idle Llama instances (call at the end; episodes still running keep theirs)."""
        while self._free:
            self._free.pop().close()

    def release(self, state: EpisodeState) -> None:
        llm = state.memory.pop(MEMORY_KEY, None)
        if llm is not None:
            self._free.append(llm)

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        return [self._turn(s) for s in states]

    def _logits(self, llm: Any) -> Any:
        import llama_cpp
        import numpy as np

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),))

    def _turn(self, state: EpisodeState) -> Reply:
        llm = state.memory.get(MEMORY_KEY)
        if llm is None:
            llm = self._free.pop() if self._free else self._new_instance()
            state.memory[MEMORY_KEY] = llm
        prompt = self.render(self.tokenizer, state.messages())
        if len(prompt) + self.max_new_tokens > self.n_ctx:
            return Reply(text="", error=f"chat of {len(prompt)} tokens does not fit n_ctx={self.n_ctx}")
        held = [int(t) for t in llm.input_ids[: llm.n_tokens]]
        keep = min(common_prefix_len(held, prompt), len(prompt) - 1)
        llm.n_tokens = keep  # eval() drops the KV cells from here on
        llm.eval(prompt[keep:])
        fed = len(prompt) - keep
        generated: list[int] = []
        for step in range(self.max_new_tokens):
            token = int(self._logits(llm).argmax())
            generated.append(token)
            if token in self.stop_ids or (
                self.stop_at_first_line
                and "\n" in self.tokenizer.decode(generated, skip_special_tokens=True).lstrip()
            ):
                break
            if step < self.max_new_tokens - 1:
                llm.eval([token])
                fed += 1
        text = self.tokenizer.decode([t for t in generated if t not in self.stop_ids], skip_special_tokens=True)
        cut = (len(generated) >= self.max_new_tokens and generated[-1] not in self.stop_ids
               and "\n" not in self.tokenizer.decode(generated, skip_special_tokens=True).lstrip())
        return Reply(text=text, tokens_encoded=fed, truncated=cut)
