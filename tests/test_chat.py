"""deploy.chat's loop (/reset, /system, streaming) and the streaming of the one generate path."""

from __future__ import annotations

import io
import sys

from tiny import make_tokenizer, tiny_model

from deploy.chat import chat_loop
from models.generate import Sampling, generate_reply


class _Recorder:
    """A chatter that answers with the number of messages it saw, streamed in two pieces."""

    def __init__(self) -> None:
        self.seen: list[list[dict[str, str]]] = []

    def reply(self, messages, on_text=None):
        self.seen.append([dict(m) for m in messages])
        answer = f"saw {len(messages)}"
        if on_text is not None:
            on_text(answer[:3])
            on_text(answer[3:])
        return answer


def test_chat_loop_commands_keep_or_replace_the_system_prompt(monkeypatch, capsys):
    bot = _Recorder()
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\nagain\n/reset\nhi\n/system You are a pirate.\nahoy\n/exit\nnever\n"))
    assert chat_loop(bot, "You are Lin Zhi.", interactive=False) == 0
    roles = [[m["role"] for m in h] for h in bot.seen]
    assert roles == [["system", "user"], ["system", "user", "assistant", "user"], ["system", "user"],
                     ["system", "user"]]
    assert bot.seen[2][0]["content"] == "You are Lin Zhi."  # /reset keeps the trained system prompt
    assert bot.seen[3][0]["content"] == "You are a pirate."  # /system starts over with the new one
    out = capsys.readouterr().out.splitlines()
    assert out == ["assistant> saw 2", "assistant> saw 4", "assistant> saw 2", "assistant> saw 2"]


def test_streamed_pieces_add_up_to_the_reply():
    tok = make_tokenizer("smollm2")
    model = tiny_model(tok, seed=3)
    msgs = [{"role": "user", "content": "Tell me about tea."}]
    sampling = Sampling(0.8, top_p=0.9, repeat_penalty=1.1)  # greedy on a random model ends at once
    for seed in (5, 6):
        pieces: list[str] = []
        reply = generate_reply(model, tok, msgs, 12, sampling, seed=seed, on_text=pieces.append)
        assert len(reply.split()) >= 3 and len(pieces) >= 3 and "".join(pieces) == reply
        assert generate_reply(model, tok, msgs, 12, sampling, seed=seed) == reply  # streaming changes nothing
