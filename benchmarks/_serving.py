"""What the serving benchmarks share: offline hub settings (set on import) and the prompts they ask."""

from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

PROMPTS = ["What is the capital of France?", "Name three colours.", "How many legs has a spider?",
           "Explain why the sky is blue.", "Give me a fruit that is yellow.", "What is 12 times 7?",
           "Who wrote Hamlet?", "Describe a cat in one sentence."]
