from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
from tiny import TEMPLATE_NAMES, make_tokenizer, save_tiny  # noqa: E402


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
