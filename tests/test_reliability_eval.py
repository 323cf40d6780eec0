"""Reliability of the eval: a faulty /v1/chat/completions server, runaway models, kill and resume,
missing dependencies, and the test suite's own network guard.

Servers are real ``http.server`` instances on 127.0.0.1; models are tiny random transformers models.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eval.expert import ExpertPolicy as Planner
from eval.household import generate_scenes
from eval.metrics import compute_metrics
from eval.policies.base import EpisodeState
from eval.policies.openai import OpenAIPolicy
from eval.react_eval import main
from eval.resume import read_log
from eval.runner import run_episodes

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ("timeout", "http500", "garbage", "nochoices", "close")


class FaultServer:
    """Answers as the expert planner, except that episodes whose first user message is in ``bad`` get
    ``fault``; ``delay`` slows every answer; ``in_flight``/``peak`` count concurrent requests."""

    def __init__(self) -> None:
        self.fault = "timeout"
        self.bad: set[str] = set()
        self.delay = 0.0
        self.calls = 0
        self.bad_calls = 0
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(self.delay)
        bad = body["messages"][1]["content"] in self.bad
        # Leave the count before answering: once the answer is sent the client may send its next request
        # before this thread gets here, and the peak would count one request twice.
        with self.lock:
            self.in_flight -= 1
            self.bad_calls += bad
        if bad:
            return self._fault(h)
        action = Planner().act(body["messages"])
        doc = {"choices": [{"message": {"content": action}, "finish_reason": "stop"}]}
        _send(h, 200, json.dumps(doc).encode())

    def _fault(self, h: BaseHTTPRequestHandler) -> None:
        if self.fault == "timeout":
            time.sleep(0.5)  # past the client's 0.2 s timeout
            return _send(h, 200, b"{}")
        if self.fault == "http500":
            return _send(h, 500, b'{"error": "boom"}')
        if self.fault == "garbage":
            return _send(h, 200, b"<html>502 Bad Gateway</html>")
        if self.fault == "nochoices":
            return _send(h, 200, b'{"object": "chat.completion"}')
        h.close_connection = True  # "close": hang up without a status line
        h.connection.shutdown(socket.SHUT_RDWR)


def _send(h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def fault_server() -> Iterator[tuple[str, FaultServer]]:
    stub = FaultServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            stub.handle(self)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", stub
    finally:
        httpd.shutdown()
        httpd.server_close()


def _first_user(scene) -> str:
    from eval.household import HouseholdEnv

    return EpisodeState(episode_id="x", first_observation=HouseholdEnv(scene).reset()).messages()[1]["content"]


# -- 1. the openai policy against a faulty server --------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_server_fault_is_retried_then_the_episode_is_an_error_and_the_run_goes_on(fault_server, fault):
    url, stub = fault_server
    scenes = generate_scenes("valid_seen", n=3)
    stub.fault, stub.bad = fault, {_first_user(scenes[1])}
    policy = OpenAIPolicy(url, "m", timeout=0.2, retries=2, backoff=0.01, concurrency=2)
    results = run_episodes(policy, scenes, batch_size=2, progress=False)
    assert [r.index for r in results] == [0, 1, 2]
    bad = results[1]
    assert bad.end_reason == "error" and not bad.won and bad.steps == 0 and bad.n_format_errors == 0
    assert bad.error and bad.error.startswith("no reply after 3 tries")
    assert stub.bad_calls == 3  # one try and two retries, then it stops
    assert results[0].won and results[2].won  # the other episodes play on
    doc = compute_metrics(results, policy="openai", split="valid_seen")
    assert doc["errors"] == 1 and doc["failures"] == 0 and doc["episodes"] == 3
    assert doc["error_rate"] == pytest.approx(1 / 3) and doc["success_rate_scored"] == 1.0
    assert sum(doc["error_reasons"].values()) == 1


def test_a_server_that_dies_mid_run_gives_error_replies_not_a_crash():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            _send(self, 200, json.dumps({"choices": [{"message": {"content": "look"}}]}).encode())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    policy = OpenAIPolicy(f"http://127.0.0.1:{httpd.server_address[1]}", "m", retries=1, backoff=0.01, timeout=1)
    msgs = [{"role": "user", "content": "hi"}]
    assert policy.complete(msgs).text == "look"
    httpd.shutdown()
    httpd.server_close()  # now every connection is refused
    reply = policy.complete(msgs)  # it answered before, so this is one episode's error, not "no server"
    assert reply.text == "" and "cannot reach" in (reply.error or "") and policy.stats["failed_replies"] == 1


def test_backoff_doubles_and_is_capped(fault_server):
    url, stub = fault_server
    scenes = generate_scenes("valid_seen", n=1)
    stub.fault, stub.bad = "http500", {_first_user(scenes[0])}
    t0 = time.perf_counter()
    OpenAIPolicy(url, "m", retries=3, backoff=0.2, backoff_max=0.25).complete(
        EpisodeState(episode_id="x", first_observation=_obs(scenes[0])).messages())
    waited = time.perf_counter() - t0
    assert stub.bad_calls == 4 and 0.7 <= waited < 1.2  # 0.2 + 0.25 + 0.25, not 0.2 + 0.4 + 0.8


def _obs(scene) -> str:
    from eval.household import HouseholdEnv

    return HouseholdEnv(scene).reset()


def test_report_counts_errors_apart_from_failures(fault_server, tmp_path):
    url, stub = fault_server
    scenes = generate_scenes("valid_unseen", n=4)
    stub.fault, stub.bad = "http500", {_first_user(scenes[0]), _first_user(scenes[3])}
    out = tmp_path / "eval"
    assert main(["--policy", "openai", "--base-url", url, "--api-model", "m", "--episodes", "4",
                 "--retries", "1", "--backoff", "0.01", "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["errors"] == 2 and doc["failures"] == 0 and doc["success_rate"] == 0.5
    assert doc["success_rate_scored"] == 1.0 and doc["policy_stats"]["failed_replies"] == 2
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["end_reason"] for r in rows] == ["error", "won", "won", "error"]
    assert "| error episodes (no reply from the policy, not scored) | 2 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_134_slow_episodes_run_concurrently_up_to_the_bound_and_none_is_lost(fault_server, tmp_path):
    url, stub = fault_server
    stub.delay = 0.02
    out = tmp_path / "eval"
    t0 = time.perf_counter()
    assert main(["--policy", "openai", "--base-url", url, "--api-model", "m", "--split", "valid_unseen",
                 "--concurrency", "8", "--batch-size", "2", "--out", str(out), "--no-progress"]) == 0
    elapsed = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    ids = [r["episode_id"] for r in rows]
    assert len(ids) == 134 and ids == [f"valid_unseen-0-{i:04d}" for i in range(134)]
    doc = json.loads((out / "results.json").read_text())
    assert doc["episodes"] == 134 and doc["success_rate"] == 1.0 and doc["errors"] == 0
    assert stub.peak == 8 and doc["policy_stats"]["max_in_flight"] == 8  # concurrent, never over the bound
    assert elapsed < stub.calls * stub.delay / 3  # far faster than one request at a time


# -- 2. models that never end a line, or emit only special tokens -----------------------------------


def _rigged(tiny_llama_dir: Path, token: int):
    """The tiny model with its head replaced so that greedy decoding always picks ``token``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = 100.0
    model.lm_head = head
    return model, AutoTokenizer.from_pretrained(str(tiny_llama_dir))


@pytest.mark.parametrize("kind", ["endless", "eos", "special"])
@pytest.mark.parametrize("continuous", [True, False])
def test_runaway_model_ends_cleanly_with_format_errors(tiny_llama_dir, kind, continuous):
    from eval.policies.hf import HFPolicy

    _, tok = _rigged(tiny_llama_dir, 0)
    token = {"endless": tok.encode("ab", add_special_tokens=False)[0],
             "eos": tok.convert_tokens_to_ids("<|im_end|>"),
             "special": tok.convert_tokens_to_ids("<|im_start|>")}[kind]
    model, tok = _rigged(tiny_llama_dir, token)
    policy = HFPolicy(model, tok, max_new_tokens=6)
    results = run_episodes(policy, generate_scenes("valid_seen", n=2), batch_size=2, max_steps=10,
                           progress=False, continuous=continuous)
    for r in results:
        assert r.end_reason == "loop" and r.steps == 3  # three empty actions, same observation: a loop
        assert r.n_format_errors == 3 and r.actions == ["", "", ""]
    if kind == "endless":
        assert all(len(reply) > 0 for r in results for reply in r.replies)  # text was there, but no line end


def test_a_cut_off_thought_is_still_a_thought():
    from eval.policies.base import Reply
    from eval.runner import _reply_action

    assert _reply_action(Reply(text="think: I should look in the fridge becau", truncated=True)).startswith("think:")
    assert _reply_action(Reply(text="go to fridge 1 and then go to", truncated=True)) == ""
    assert _reply_action(Reply(text="go to fridge 1", truncated=False)) == "go to fridge 1"


# -- 3. kill an eval mid-way, resume it ------------------------------------------------------------


def _eval_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "eval.react_eval", "--policy", "random", "--split", "valid_seen",
            "--episodes", "40", "--max-steps", "30", "--batch-size", "1", "--seed", "2", "--out", str(out),
            "--no-progress", *extra]


def _comparable(path: Path) -> dict:
    doc = json.loads(path.read_text())
    for key in ("elapsed_s", "episodes_per_s"):
        doc.pop(key)
    return doc


@pytest.mark.slow
def test_killed_eval_resumes_to_the_same_results(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_eval_cmd(full), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_eval_cmd(cut), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = cut / "episodes.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.is_file() or len(read_log(log)) < 5):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = read_log(log)
    assert 5 <= len(kept) < 40 and not (cut / "results.json").exists()
    with open(log, "a") as f:  # as if killed in the middle of writing the next row
        f.write('{"episode_id": "valid_seen-2-00')
    res = subprocess.run(_eval_cmd(cut, "--resume"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(kept)} of 40 episodes" in res.stderr
    assert _comparable(cut / "results.json") == _comparable(full / "results.json")
    assert (cut / "episodes.jsonl").read_text() == (full / "episodes.jsonl").read_text()


def test_resume_skips_finished_episodes_and_drops_a_truncated_line(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--policy", "random", "--split", "valid_seen", "--episodes", "5", "--max-steps", "8",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    first = _comparable(out / "results.json")
    lines = (out / "episodes.jsonl").read_text().splitlines(keepends=True)
    (out / "episodes.jsonl").write_text("".join(lines[:2]) + lines[2][:40])  # two whole rows and a cut one
    (out / "results.json").unlink()
    assert main([*argv, "--resume"]) == 0
    assert "resuming: 2 of 5 episodes" in capsys.readouterr().err
    assert _comparable(out / "results.json") == first
    assert (out / "episodes.jsonl").read_text() == "".join(lines)
    # everything done: --resume plays nothing and rewrites the same report
    assert main([*argv, "--resume"]) == 0 and _comparable(out / "results.json") == first


def test_resume_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--policy", "random", "--episodes", "2", "--max-steps", "4", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--seed", "7", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "other settings (seed: was 0, now 7)" in err and err.count("\n") == 1


# -- 5. missing pieces: one line, no traceback -----------------------------------------------------


def _cli(args: list[str], tmp_path: Path, prepend: str | None = None, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([prepend, str(ROOT)] if prepend else [str(ROOT)])
    full_env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "eval.react_eval", *args, "--out", str(tmp_path / "o"),
                           "--no-progress"], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_uncached_hub_model_offline_is_one_line(tmp_path):
    res = _cli(["--policy", "hf", "--model", "someone/nonexistent-model"], tmp_path,
               HF_HOME=str(tmp_path / "hf"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "someone/nonexistent-model" in lines[0] and "HF_HUB_OFFLINE" in lines[0] and "hf download" in lines[0]


def test_missing_llama_cpp_is_one_line(tmp_path):
    shadow = tmp_path / "shadow" / "llama_cpp"
    shadow.mkdir(parents=True)
    # a stand-in that fails to import exactly as a missing package does
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'llama_cpp'\", name='llama_cpp')\n")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    res = _cli(["--policy", "llamacpp", "--model", str(gguf)], tmp_path, prepend=str(shadow.parent))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == ["error: the llamacpp policy needs llama-cpp-python: pip install 'unsloth-recipes[llamacpp]'"]


# -- 6. the socket guard ---------------------------------------------------------------------------


def test_network_guard_blocks_non_loopback_and_allows_loopback(network_guard, fault_server):
    url, _ = fault_server
    with pytest.raises(ConnectionRefusedError, match="tests must stay on loopback"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect_ex(("203.0.113.7", 443))
    assert network_guard.attempts == ["('192.0.2.1', 80)", "('203.0.113.7', 443)"]
    network_guard.attempts.clear()  # this test wanted them; any other test would now fail
    host, port = url.removeprefix("http://").split(":")
    socket.create_connection((host, int(port)), timeout=1).close()
    a, b = socket.socketpair()  # unix sockets stay allowed
    a.close()
    b.close()


@pytest.mark.slow
def test_network_guard_fails_a_test_that_swallows_the_error(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import urllib.request\n"
        "def test_quietly_online():\n"
        "    try:\n"
        "        urllib.request.urlopen('http://192.0.2.1/', timeout=1)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                          str(probe)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout
    assert "network access blocked: ('192.0.2.1', 80)" in res.stdout
