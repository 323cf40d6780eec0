"""Chat with a trained model: a PEFT adapter folder, a merged HF folder, or a GGUF file.

    python -m deploy.chat runs/<run>/adapter
    python -m deploy.chat runs/<run>/export/merged
    python -m deploy.chat runs/<run>/export/<name>-q8_0.gguf [--system "..."]

Reads one user message per line from stdin (so it works piped: ``echo hi | python -m deploy.chat X``);
``exit`` or end of input quits, ``reset`` clears the history. Decoding is greedy by default (``--temperature``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from models.generate import Sampling


class Chatter(Protocol):
    def reply(self, messages: list[dict[str, str]], on_text: Callable[[str], None] | None = None) -> str:
        """The next reply; ``on_text`` gets its text piece by piece as it is generated (streaming)."""
        ...


class HFChatter:
    def __init__(
        self, path: Path, base: str | None, max_new_tokens: int, temperature: float, allow_pickle: bool = False
    ) -> None:
        from models.loading import load_model

        if (path / "adapter_config.json").is_file():
            from deploy.lora import LoraAdapter
            from deploy.merge import resolve_base

            base_name = str(resolve_base(LoraAdapter.load(path), base))
            self.model, self.tok = load_model(base_name, path, allow_pickle=allow_pickle)
        elif (path / "config.json").is_file():
            self.model, self.tok = load_model(str(path), allow_pickle=allow_pickle)
        else:
            raise FileNotFoundError(
                f"{path}: not an adapter (adapter_config.json), model folder (config.json) or .gguf"
            )
        self.max_new_tokens = max_new_tokens
        self.sampling = Sampling(temperature)

    def reply(self, messages: list[dict[str, str]], on_text: Callable[[str], None] | None = None) -> str:
        from models.generate import generate_reply

        return generate_reply(self.model, self.tok, messages, self.max_new_tokens, self.sampling, on_text=on_text)


class GGUFChatter:
    def __init__(self, path: Path, max_new_tokens: int, temperature: float) -> None:
        from deploy.llamacpp import llama_cpp_available, load_llama

        ok, why = llama_cpp_available()
        if not ok:
            raise RuntimeError(why)
        self.llm = load_llama(path, n_ctx=0, logits_all=False)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def reply(self, messages: list[dict[str, str]], on_text: Callable[[str], None] | None = None) -> str:
        # llama-cpp-python renders the chat template stored in the GGUF (the training template).
        chunks = self.llm.create_chat_completion(
            messages=messages,
            max_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=1 if self.temperature == 0 else 40,
            stream=True,
        )
        pieces: list[str] = []
        for chunk in chunks:
            piece = chunk["choices"][0]["delta"].get("content") or ""
            if piece and not pieces:
                piece = piece.lstrip()  # the reply is stripped, as before streaming
            if piece:
                pieces.append(piece)
                if on_text is not None:
                    on_text(piece)
        return "".join(pieces).strip()


def open_model(
    path: Path, base: str | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
    allow_pickle: bool = False,
) -> Chatter:
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        return GGUFChatter(path, max_new_tokens, temperature)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder or .gguf file")
    return HFChatter(path, base, max_new_tokens, temperature, allow_pickle)


def trained_system(model: Path) -> str | None:
    """The system prompt the run trained with, found from an adapter (RUN/adapter), a GGUF (RUN/export/x.gguf)
    or a merged folder (RUN/export/merged)."""
    from deploy.export import trained_system_prompt

    for run in list(model.resolve().parents)[:3]:
        found = trained_system_prompt(run / "data" / "train.jsonl")
        if found:
            return found
    return None


def main(argv: list[str] | None = None) -> int:
    from models.quiet import quiet_dependency_noise

    quiet_dependency_noise()
    p = argparse.ArgumentParser(prog="python -m deploy.chat", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="adapter folder, merged model folder, or .gguf file")
    p.add_argument(
        "--base", help="base model for an adapter (default: the adapter's base_model_name_or_path)"
    )
    p.add_argument("--system", help="system prompt (default: the one the run's training rows shared, if any)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load pickle weights (pytorch_model.bin, *.pt): only for files you trust")
    args = p.parse_args(argv)
    try:
        chatter = open_model(args.model, args.base, args.max_new_tokens, args.temperature, args.allow_pickle)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.system is None:
        args.system = trained_system(args.model)
    return chat_loop(chatter, args.system, interactive=sys.stdin.isatty())


HELP = "type a message; /reset clears the history, /system TEXT sets the system prompt, /exit quits"


def chat_loop(chatter: Chatter, system: str | None, *, interactive: bool) -> int:
    """Multi-turn chat over stdin. ``/reset``, ``/system TEXT`` and ``/exit`` (also bare ``reset``/``exit``)."""
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    if interactive:
        print(HELP, file=sys.stderr)
    while True:
        if interactive:
            print("you> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            return 0
        text = line.strip()
        command, _, arg = text.partition(" ")
        if command in ("/exit", "exit", "/quit"):
            return 0
        if command in ("/reset", "reset"):
            history = history[:1] if history and history[0]["role"] == "system" else []
        elif command == "/system":
            history = [{"role": "system", "content": arg}] if arg else []  # a new persona starts a new chat
        elif text:
            history.append({"role": "user", "content": text})
            print("assistant> ", end="", flush=True)
            answer = chatter.reply(history, on_text=lambda piece: print(piece, end="", flush=True))
            print(flush=True)
            history.append({"role": "assistant", "content": answer})


if __name__ == "__main__":
    sys.exit(main())
