from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import ipaddress  # noqa: E402
import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import pytest  # noqa: E402
from tiny import TEMPLATE_NAMES, make_tokenizer, save_tiny  # noqa: E402


class NetworkBlocked(ConnectionRefusedError):
    """Raised by the socket guard for a connection that would leave this machine."""


@dataclass
class NetworkGuard:
    """What the guard blocked during one test; the test fails at teardown if ``attempts`` is not empty,
    even when the code under test swallowed the error (urllib, the Hub client and others retry quietly)."""

    attempts: list[str] = field(default_factory=list)


def _is_local(family: int, address: object) -> bool:
    if family == getattr(socket, "AF_UNIX", None) or not isinstance(address, tuple):
        return True  # unix sockets (and anything that is not an internet address) stay on the machine
    host = str(address[0]).split("%")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would be resolved and reached over the network


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """No test touches the network: a non-loopback ``connect``/``connect_ex`` raises and fails the test.

    Covers this process only; tests that start subprocesses keep them offline with HF_HUB_OFFLINE=1 (above).
    """
    guard = NetworkGuard()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock: socket.socket, address: object) -> None:
        if not _is_local(sock.family, address):
            guard.attempts.append(repr(address))
            raise NetworkBlocked(f"test tried to reach {address!r}: tests must stay on loopback")

    def connect(sock: socket.socket, address: object) -> None:
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield guard
    if guard.attempts:
        pytest.fail(f"network access blocked: {', '.join(guard.attempts)}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(params=TEMPLATE_NAMES)
def any_tokenizer(request: pytest.FixtureRequest):
    """SmolLM2's real tokenizer under each of the four chat templates."""
    return make_tokenizer(request.param)


@pytest.fixture
def smol_tokenizer():
    return make_tokenizer("smollm2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"), template="smollm2", family="llama")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny(tmp_path_factory.mktemp("tiny-qwen2"), template="qwen2_5", family="qwen2")
