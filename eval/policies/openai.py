"""Any ``/v1/chat/completions`` server as a policy (Ollama, vLLM, llama_cpp.server), stdlib only.

Greedy (temperature 0), stop at the end of the first line as the ReAct paper did, a timeout per request
and retries with exponential backoff for timeouts, connection errors, 429 and 5xx. A reply that is not the
expected JSON, or has no text, becomes an empty reply with an ``error``: the runner counts it as a format
error. A server that cannot be reached at all, or rejects the request (4xx), raises :class:`PolicyError`.
Requests for a batch of episodes run concurrently (one thread per episode, up to ``concurrency``).
"""

from __future__ import annotations

import json
import os
import socket
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
        max_tokens: int = 48,
        stop: tuple[str, ...] = ("\n",),
        concurrency: int = 8,
    ) -> None:
        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.stop = list(stop)
        self.concurrency = max(1, concurrency)

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        if len(states) == 1 or self.concurrency == 1:
            return [self.complete(s.messages()) for s in states]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(states))) as pool:
            return list(pool.map(lambda s: self.complete(s.messages()), states))

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
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return resp.read()

    def complete(self, messages: list[dict[str, str]]) -> Reply:
        """One chat completion, with retries. Never raises for a bad reply; raises PolicyError if unreachable."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                raw = self._request(messages)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode("utf-8", "replace")
                if exc.code == 429 or exc.code >= 500:
                    last = f"HTTP {exc.code}: {detail}"
                    continue
                raise PolicyError(f"{self.url} rejected the request (HTTP {exc.code}): {detail}") from exc
            except TimeoutError as exc:
                last = f"timeout after {self.timeout:g} s ({exc})"
                continue
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    last = f"timeout after {self.timeout:g} s"
                    continue
                last = f"cannot reach {self.url}: {exc.reason}"
                if attempt == self.retries:
                    raise PolicyError(f"{last}; is the server running?") from exc
                continue
            except (ConnectionError, OSError) as exc:
                last = f"connection error: {exc}"
                continue
            return self._parse(raw)
        return Reply(text="", error=f"no reply after {self.retries + 1} tries: {last}")

    @staticmethod
    def _parse(raw: bytes) -> Reply:
        try:
            doc = json.loads(raw)
            content = doc["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            snippet = raw[:80].decode("utf-8", "replace")
            return Reply(text="", error=f"invalid reply ({type(exc).__name__}): {snippet!r}")
        if not isinstance(content, str):
            return Reply(text="", error="reply has no text content")
        usage = doc.get("usage") if isinstance(doc, dict) else None
        tokens = 0
        if isinstance(usage, dict):
            tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        return Reply(text=content, tokens_encoded=tokens)
