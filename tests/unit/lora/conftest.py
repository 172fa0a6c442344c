"""Fixtures of the LoRA unit tests: a fake vLLM answering the LoRA runtime API as vLLM 0.32 does,
and a client of it."""

import pytest
from fake_vllm import FakeVllm

from inferstack.lora import LoraClient

BASE = "smollm2-135m-instruct"


@pytest.fixture
def vllm():
    with FakeVllm(BASE, max_lora_rank=8) as fake:
        yield fake


@pytest.fixture
def client():
    with LoraClient(request_timeout_s=5, load_timeout_s=5) as c:
        yield c
