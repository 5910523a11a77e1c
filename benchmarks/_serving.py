"""What the serving benchmarks share: offline hub settings (set on import), the prompts they ask, their descriptions."""

from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

PROMPTS = ["What is the capital of France?", "Name three colours.", "How many legs has a spider?",
           "Explain why the sky is blue.", "Give me a fruit that is yellow.", "What is 12 times 7?",
           "Who wrote Hamlet?", "Describe a cat in one sentence."]


def descriptions(n: int, offset: int = 0) -> list[str]:
    """``n`` distinct descriptions (one modulation row each)."""
    return [f"Answer in the style number {offset + i}, with care." for i in range(n)]


def prompts(n: int) -> list[str]:
    """``n`` prompts, PROMPTS in turn."""
    return [PROMPTS[i % len(PROMPTS)] for i in range(n)]
