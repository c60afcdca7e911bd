"""Fixtures of small randomly initialised transformer models (built in tests/helpers/models.py)."""

from __future__ import annotations

import pytest
from transformers import BertModel, GPT2LMHeadModel, LlamaForCausalLM

from tests.helpers.models import make_bert, make_gpt2, make_llama


@pytest.fixture
def tiny_llama() -> LlamaForCausalLM:
    return make_llama()


@pytest.fixture
def tiny_gpt2() -> GPT2LMHeadModel:
    return make_gpt2()


@pytest.fixture
def tiny_bert() -> BertModel:
    return make_bert()
