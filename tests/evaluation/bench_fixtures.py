"""Hand-written benchmark fixtures: tiny local rows in the hub datasets' schemas, T2L-style metadata, a model."""

from __future__ import annotations

import json
from pathlib import Path

PIQA = [
    {"goal": "To dry wet shoes quickly,", "sol1": "stuff them with newspaper.", "sol2": "put them in the freezer.",
     "label": 0},
    {"goal": "How do I cut a tomato thinly?", "sol1": "Use a spoon.", "sol2": "Use a sharp serrated knife.",
     "label": 1},
    {"goal": "To keep bread fresh,", "sol1": "store it in a sealed bag.", "sol2": "leave it in the sun.", "label": 0},
    {"goal": "How can I light a dark room?", "sol1": "Close the curtains.", "sol2": "Switch on a lamp.", "label": 1},
    {"goal": "To cool hot soup,", "sol1": "stir it and wait.", "sol2": "add more heat.", "label": 0},
    {"goal": "How do I water a plant?", "sol1": "Pour sand on it.", "sol2": "Pour water at its base.", "label": 1},
]
GSM8K = [
    {"question": "Tom has 3 apples and buys 2 more. How many apples does he have?",
     "answer": "3 + 2 = 5\n#### 5"},
    {"question": "A box holds 4 pens. How many pens are in 3 boxes?", "answer": "4 * 3 = 12\n#### 12"},
    {"question": "Sara had 10 sweets and ate 4. How many are left?", "answer": "10 - 4 = 6\n#### 6"},
]
DESCRIPTIONS = {
    "piqa": ["Pick the more practical way to reach an everyday goal.",
             "Choose the solution a sensible person would use at home.",
             "Decide which of two everyday methods works better."],
    "gsm8k": ["Solve short arithmetic word problems step by step.",
              "Work out the number the question asks for.",
              "Answer grade-school math questions with a final number."],
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def benchmark_dirs(root: Path) -> tuple[Path, Path]:
    """(data_dir, tasks_dir): piqa validation and gsm8k test rows (no train split), and their metadata."""
    import yaml

    data, tasks = root / "data", root / "tasks"
    write_jsonl(data / "piqa" / "validation.jsonl", PIQA)
    write_jsonl(data / "gsm8k" / "test.jsonl", GSM8K)
    for task, texts in DESCRIPTIONS.items():
        (tasks / task).mkdir(parents=True, exist_ok=True)
        (tasks / task / "metadata.yaml").write_text(yaml.safe_dump({"descriptions": texts}), encoding="utf-8")
    return data, tasks
