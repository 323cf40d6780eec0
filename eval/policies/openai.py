"""Any ``/v1/chat/completions`` server as a policy (Ollama, vLLM, llama_cpp.server), stdlib only.

Greedy (temperature 0), stop at the end of the first line as the ReAct paper did, a timeout per request
and bounded retries with exponential backoff (``backoff * 2**k`` seconds, capped at ``backoff_max``) for
every fault a server can show: a timeout, a refused or dropped connection, 429 and 5xx, and a reply that
is not the expected JSON (an HTML error page from a proxy, no ``choices``). What is still failing after the
last retry comes back as a :class:`Reply` with an ``error``: the runner ends that episode as ``error`` (not
a failure) and the run goes on. Two cases raise :class:`PolicyError` instead, since no episode could ever
succeed: a server that rejects the request (4xx other than 429: wrong model name, bad key), and one that
refuses every connection before it has answered once (nothing listening at ``--base-url``).

A reply cut by the server's token limit (``finish_reason: "length"``) is marked ``truncated``; one with no
text is an empty reply: both are the model's format errors, not server errors.

Episodes run concurrently, one thread per episode and up to ``concurrency`` at a time, each thread playing
its episode turn after turn (``act_continuous``): a slow reply holds up only its own episode.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eval.policies.base import EpisodeState, PolicyError, Reply


def chat_completions_url(base_url: str) -> str:
    """``http://host:port`` | ``.../v1`` | ``.../v1/chat/completions`` -> the chat completions endpoint."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise PolicyError(f"--base-url '{base_url}' must start with http:// or https://")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


class _Retry(Exception):
    """A fault worth retrying; ``str()`` is the reason reported when the retries run out."""


class OpenAIPolicy:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        max_tokens: int = 48,
        stop: tuple[str, ...] = ("\n",),
        concurrency: int = 8,
    ) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("openai policy: retries and backoff must be >= 0 and timeout > 0")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_tokens = max_tokens
        self.stop = list(stop)
        self.concurrency = max(1, concurrency)
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "failed_replies": 0, "max_in_flight": 0}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._reached = False  # the server has answered at least once (even with an HTTP error)

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        if len(states) == 1 or self.concurrency == 1:
            return [self.complete(s.messages()) for s in states]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(states))) as pool:
            return list(pool.map(lambda s: self.complete(s.messages()), states))

    def act_continuous(self, feed: Any, batch_size: int) -> None:
        """Play the runner's ``feed`` with ``concurrency`` threads, each taking the next episode when its own
        ends. A :class:`PolicyError` in one thread stops the others from starting new episodes and is raised."""
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set() and (state := feed.start()) is not None:
                try:
                    while not stop.is_set() and feed.reply(state, self.complete(state.messages())):
                        pass
                except BaseException:
                    stop.set()
                    raise

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(worker) for _ in range(self.concurrency)]
        for f in futures:
            f.result()  # re-raise the first worker's error, if any

    def _request(self, messages: list[dict[str, str]]) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "stream": False,
        }
        if self.stop:
            body["stop"] = self.stop
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        with self._lock:
            self.stats["requests"] += 1
            self._in_flight += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._in_flight)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
            self._reached = True
            return raw
        finally:
            with self._lock:
                self._in_flight -= 1

    def complete(self, messages: list[dict[str, str]]) -> Reply:
        """One chat completion, with retries. A fault that outlasts them is a Reply with ``error``."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                with self._lock:
                    self.stats["retries"] += 1
                time.sleep(min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))
            try:
                return self._parse(self._attempt(messages))
            except _Retry as exc:
                last = str(exc)
        if last.startswith("cannot reach") and not self._reached:
            raise PolicyError(f"{last}; is the server running?")
        with self._lock:
            self.stats["failed_replies"] += 1
        return Reply(text="", error=f"no reply after {self.retries + 1} tries: {last}")

    def _attempt(self, messages: list[dict[str, str]]) -> bytes:
        """One request; raises :class:`_Retry` for a transient fault, PolicyError for a rejected request."""
        try:
            return self._request(messages)
        except urllib.error.HTTPError as exc:
            self._reached = True
            detail = exc.read()[:200].decode("utf-8", "replace")
            if exc.code == 429 or exc.code >= 500:
                raise _Retry(f"HTTP {exc.code}: {detail}") from None
            raise PolicyError(f"{self.url} rejected the request (HTTP {exc.code}): {detail}") from exc
        except TimeoutError:
            raise _Retry(f"timeout after {self.timeout:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise _Retry(f"timeout after {self.timeout:g} s") from None
            raise _Retry(f"cannot reach {self.url}: {exc.reason}") from None
        except (ConnectionError, OSError) as exc:  # the server dropped the connection mid-reply
            raise _Retry(f"connection error: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _parse(raw: bytes) -> Reply:
        """The reply's text; :class:`_Retry` when the body is not a chat completion (a server fault)."""
        try:
            doc = json.loads(raw)
            choice = doc["choices"][0]
            content = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            snippet = raw[:80].decode("utf-8", "replace")
            raise _Retry(f"invalid reply ({type(exc).__name__}): {snippet!r}") from None
        truncated = isinstance(choice, dict) and choice.get("finish_reason") == "length"
        usage = doc.get("usage") if isinstance(doc, dict) else None
        tokens = 0
        if isinstance(usage, dict):
            tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        text = content if isinstance(content, str) else ""  # null content: the model said nothing
        return Reply(text=text, tokens_encoded=tokens, truncated=truncated)
