"""Run launch/train.py once per variant (a list of overrides) and collect each run's eval.json.

Shared by ``ablate_conditioning.py`` and ``compare_methods.py``: every variant is a real run of the
recipe (the DeepSpeed engine, two processes with ZeRO-2 by default, as the main job), so a row of
a table is exactly what ``bash make.sh train <overrides>`` would report. A finished variant (its eval.json
exists) is not run again unless ``force``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED = str(Path(sys.executable).with_name("deepspeed"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_variant(name: str, overrides: list[str], out_root: Path, config: str = "launch/configs/default.yaml",
                ds_config: str = "launch/configs/zero2.json", procs: int = 2, threads: int = 1,
                timeout: float = 3600, force: bool = False) -> dict:
    """Train and evaluate one variant into ``out_root/name``; returns its eval.json plus ``wall_s``."""
    out = out_root / name
    report = out / "eval.json"
    if report.is_file() and not force:
        return json.loads(report.read_text())
    if out.exists():  # an unfinished earlier attempt: start it over in a fresh folder
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [DEEPSPEED, "--num_gpus", str(procs), "--master_port", str(_free_port()), "launch/train.py",
           "--ds_config", ds_config, "--config", config, f"output_dir={out}", *overrides]
    t0 = time.perf_counter()
    with open(out.parent / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"variant {name} failed ({proc.returncode}); see {out.parent / f'{name}.log'}")
    result = json.loads(report.read_text())
    result["wall_s"] = wall
    from zhyper.io import atomic_write

    atomic_write(report, json.dumps(result, indent=1))
    return result


def fmt(value: float | None, se: float | None = None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if se is None else f"{value:.{digits}f} ± {2 * se:.{digits}f}"


def summary(result: dict) -> dict:
    """The figures a table row shows, from one eval.json."""
    final, comp = result.get("final", {}), result.get("compliance", {})
    seen = result.get("counts", {}).get("seen", [])
    # a recipe with no paraphrases (IFEval: its own texts are the descriptions) ranks rules by held-out texts
    per_rule = {r: comp.get(f"compliance_paraphrase.{r}", comp.get(f"compliance_heldout.{r}")) for r in seen}
    excess = {r: comp.get(f"control_random.{r}", math.nan) - comp.get(f"control_base.{r}", math.nan) for r in seen}
    worst = min(per_rule.items(), key=lambda kv: kv[1] if kv[1] is not None else 2.0, default=(None, None))
    return {
        "paraphrase_seen": comp.get("compliance_paraphrase_seen"), "paraphrase_seen_se":
            comp.get("compliance_paraphrase_seen_se"),
        "heldout_seen": comp.get("compliance_heldout_seen"), "heldout_seen_se": comp.get("compliance_heldout_seen_se"),
        "heldout_unseen": comp.get("compliance_heldout_unseen"),
        "heldout_unseen_se": comp.get("compliance_heldout_unseen_se"),
        "paraphrase_unseen": comp.get("compliance_paraphrase_unseen"),
        "base_prompt_seen": comp.get("compliance_base_prompt_seen"),
        "base_prompt_unseen": comp.get("compliance_base_prompt_unseen"),
        "worst_rule": worst[0], "worst": worst[1],
        "random_excess_max": max((v for v in excess.values() if not math.isnan(v)), default=None),
        "random_excess_rule": max(excess, key=lambda r: excess[r] if not math.isnan(excess[r]) else -9, default=None),
        "seen_gap": final.get("seen_gap"), "seen_gap_se": final.get("seen_gap_se"),
        "paraphrase_gap": final.get("seen_paraphrase_gap"), "paraphrase_gap_se": final.get("seen_paraphrase_gap_se"),
        "unseen_gap": final.get("unseen_gap"), "unseen_gap_se": final.get("unseen_gap_se"),
        "val_seen_loss": final.get("val_seen_loss"), "step_time_s": result.get("step_time_s"),
        "n_trainable": result.get("n_trainable"), "wall_s": result.get("wall_s"),
        "per_rule": per_rule,
        "retention_mean": result.get("retention", {}).get("retention/mean"),
        "retention_worst": result.get("retention", {}).get("retention/worst"),
        "spread": result.get("diagnostics", {}).get("diagnostics.spread_median"),
        "description_share": result.get("diagnostics", {}).get("diagnostics.description_share"),
        "effective_rank": result.get("diagnostics", {}).get("diagnostics.effective_rank"),
        "train_min": result["train_time_s"] / 60 if result.get("train_time_s") else None,
    }
