"""Shared fixtures: offline environment, seeding, tiny randomly initialised HF models, shared data."""

from __future__ import annotations

import os
from pathlib import Path

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZHYPER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    return 0


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (AskX, task metadata); skips when absent, as in a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set ZHYPER_SHARED_DATA)")
    return SHARED_DATA


def tiny_llama(n_layers: int = 2, hidden: int = 32, vocab: int = 97, kv_heads: int = 2, seed: int = 0):
    """A randomly initialised Llama with the real architecture (GQA, MLP, tied head off)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def tiny_mistral(n_layers: int = 2, hidden: int = 32, vocab: int = 97, seed: int = 0):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, sliding_window=64)
    return MistralForCausalLM(cfg).eval()


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def mistral():
    return tiny_mistral()
