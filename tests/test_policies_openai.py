"""The openai policy against a real HTTP server on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eval.expert import ExpertPolicy as Planner
from eval.household import generate_scenes
from eval.policies.base import PolicyError
from eval.policies.openai import OpenAIPolicy, chat_completions_url
from eval.react_eval import main
from eval.runner import run_episodes


class Stub:
    """Server behaviour, switched by the test: 'expert' | 'garbage' | 'nochoices' | 'sleep' | 'flaky' | 'reject' | 'reject_first'."""

    def __init__(self) -> None:
        self.mode = "expert"
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.calls = 0


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append(body)
            stub.paths.append(self.path)
            stub.calls += 1
            if stub.mode == "sleep":
                time.sleep(0.6)
            if stub.mode == "garbage":
                return self._send(200, b"<html>definitely not json")
            if stub.mode == "nochoices":
                return self._send(200, b'{"choices": []}')
            if stub.mode == "reject" or (stub.mode == "reject_first" and stub.calls == 1):
                return self._send(404, b'{"error": "model not found"}')
            if stub.mode == "flaky" and stub.calls % 2 == 1:
                return self._send(503, b'{"error": "busy"}')
            action = Planner().act(body["messages"])
            doc = {"choices": [{"message": {"role": "assistant", "content": action}}],
                   "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
            return self._send(200, json.dumps(doc).encode())

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Stub]]:
    stub = Stub()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", stub
    finally:
        httpd.shutdown()
        httpd.server_close()


MSGS = [{"role": "system", "content": "s"},
        {"role": "user", "content": "You are in the middle of a room. Looking quickly around you, you see a fridge 1.\n\n"
                                    "Your task is to: put a apple in fridge."}]


def test_url_forms():
    assert chat_completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
    with pytest.raises(PolicyError):
        chat_completions_url("h:1")


def test_plays_episodes_greedy_with_stop(server):
    url, stub = server
    scenes = generate_scenes("valid_seen", n=3)
    policy = OpenAIPolicy(url + "/v1", "agent", concurrency=3)
    results = run_episodes(policy, scenes, batch_size=3, progress=False)
    assert all(r.won for r in results)
    assert all(r.tokens_encoded == 10 * r.steps for r in results)
    req = stub.requests[0]
    assert req["model"] == "agent" and req["temperature"] == 0 and req["stop"] == ["\n"]
    assert req["messages"][0]["role"] == "system" and req["messages"][-1]["role"] == "user"
    assert set(stub.paths) == {"/v1/chat/completions"}


@pytest.mark.parametrize("mode", ["garbage", "nochoices"])
def test_garbage_replies_are_retried_then_end_the_episode_as_error(server, mode):
    url, stub = server
    stub.mode = mode
    reply = OpenAIPolicy(url, "m", retries=1, backoff=0.01).complete(MSGS)
    assert reply.text == "" and reply.error and "invalid reply" in reply.error and stub.calls == 2
    (r,) = run_episodes(OpenAIPolicy(url, "m", retries=0), generate_scenes("valid_seen", n=1), progress=False)
    assert r.end_reason == "error" and not r.won and r.steps == 0 and "invalid reply" in (r.error or "")
    assert r.n_format_errors == 0 and r.errors


def test_timeout_is_retried_then_reported(server):
    url, stub = server
    stub.mode = "sleep"
    t0 = time.perf_counter()
    reply = OpenAIPolicy(url, "m", timeout=0.2, retries=1, backoff=0.01).complete(MSGS)
    assert reply.text == "" and "timeout" in (reply.error or "")
    assert stub.calls == 2 and time.perf_counter() - t0 < 3


def test_server_errors_are_retried(server):
    url, stub = server
    stub.mode = "flaky"
    reply = OpenAIPolicy(url, "m", retries=2, backoff=0.01).complete(MSGS)
    assert reply.error is None and reply.text.startswith("think:") and stub.calls == 2


def test_rejected_request_and_unreachable_server_raise(server):
    url, stub = server
    stub.mode = "reject"
    with pytest.raises(PolicyError, match="HTTP 404"):
        OpenAIPolicy(url, "m", retries=0).complete(MSGS)
    with pytest.raises(PolicyError, match="server running"):
        OpenAIPolicy("http://127.0.0.1:9", "m", retries=1, backoff=0.01, timeout=1).complete(MSGS)


def test_react_eval_cli_with_openai(server, tmp_path, capsys):
    url, _ = server
    code = main(["--policy", "openai", "--base-url", url, "--api-model", "agent", "--split", "valid_unseen",
                 "--episodes", "4", "--batch-size", "2", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["success_rate"] == 1.0 and doc["policy"] == "openai" and doc["model"] == "agent"
    assert "100.0%" in capsys.readouterr().out


def test_rejected_request_stops_the_concurrent_run_with_one_line(server, tmp_path, capsys):
    url, stub = server
    stub.mode = "reject_first"  # the first request is rejected, the others would be answered
    code = main(["--policy", "openai", "--base-url", url, "--api-model", "nope", "--episodes", "6",
                 "--concurrency", "3", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "HTTP 404" in err and err.count("\n") == 1 and "Traceback" not in err
    assert stub.calls <= 6  # the other threads stop after their request in flight (a full run makes ~60)
