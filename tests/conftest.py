"""Shared fixtures: offline environment, seeding, tiny randomly initialised HF models, shared data."""

from __future__ import annotations

import os
from pathlib import Path

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import pytest
import torch

from zhyper.testing import tiny_llama, tiny_mistral  # noqa: F401  (the tests import them from here too)

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


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def mistral():
    return tiny_mistral()
