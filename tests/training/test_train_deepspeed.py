"""launch/train.py on the real DeepSpeed engine: two CPU processes (gloo), cpu-tiny.yaml.

Each run is a real `deepspeed` launcher invocation; runs are shared between tests through
module-scoped fixtures. Marked slow (about 3 minutes in all); CI runs them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
CONFIGS = REPO / "launch" / "configs"
DEEPSPEED = str(Path(sys.executable).with_name("deepspeed"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _train(out: Path, *overrides: str, ds: str = "zero3.json", resume: bool = False, launcher=None) -> Path:
    port = _free_port()
    cmd = launcher or [DEEPSPEED, "--num_gpus", "2", "--master_port", str(port)]
    cmd = [*cmd, str(REPO / "launch" / "train.py"), "--ds_config", str(CONFIGS / ds),
           "--config", str(CONFIGS / "cpu-tiny.yaml"), f"output_dir={out}", "debug_outputs=true", *overrides]
    if resume:
        cmd.append("--resume")
    proc = subprocess.run(cmd, cwd=REPO, env=_env(out), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    if launcher is None:  # a given launcher chooses its own port
        assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*")), "the run left shared memory"
    return out


def _losses(out: Path) -> list[float]:
    return json.loads((out / "losses.json").read_text())["losses"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


GENERATE = ["eval.generate=true", "eval.prompts=2", "eval.paraphrases_per_prompt=1", "eval.controls=2",
            "eval.max_new_tokens=4", "eval.base_prompt=false", "eval.retention=4", "eval.retention_tokens=4"]


@pytest.fixture(scope="module")
def zero3(runs):
    return _train(runs / "zero3", *GENERATE)


def test_zero3_partitions_every_parameter(zero3):
    parts = [json.loads((zero3 / f"partition_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(p["world"] == 2 for p in parts)
    for p in parts:  # each rank holds about half (padding to the world size aside), not all
        assert p["full"] / 2 <= p["held"] <= p["full"] / 2 + 1000
    assert parts[0]["full"] == parts[1]["full"]


def test_zero3_run_trains_and_reports(zero3):
    losses = _losses(zero3)
    assert len(losses) == 4 and all(0 < x < 20 for x in losses)
    report = json.loads((zero3 / "eval.json").read_text())
    assert {"val_seen_loss", "val_unseen_loss", "conditioning_gap"} <= set(report["final"])
    assert (zero3 / "checkpoints" / "latest").read_text() == "step4"
    assert (zero3 / "peft_example" / "adapter_config.json").is_file()
    # the checkpoint and the example record their weights' SHA-256 (checked on load)
    assert "model.safetensors" in json.loads((zero3 / "final" / "zhyper_config.json").read_text())["files"]
    example = json.loads((zero3 / "peft_example" / "zhyper_export.json").read_text())
    assert "adapter_model.safetensors" in example["files"]
    assert len(json.loads((zero3 / "final" / "contexts.json").read_text())) == 29  # what `zhyper serve` names
    # the compliance evaluation ran on the gathered ZeRO-3 module, every rank answering its share
    n_rules = 29
    assert len((zero3 / "answers.jsonl").read_text().splitlines()) == n_rules * (2 + 2) + 2 + 2
    assert report["compliance"]["compliance_paraphrase_seen"] >= 0 and (zero3 / "confusion.png").stat().st_size > 0
    md = (zero3 / "eval.md").read_text()
    assert "Gap, unseen rules:" in md and "| **mean, seen** |" in md
    assert "## Content retention" in md and "| adapters off | " in md  # 4 questions under each of the 24 seen rules
    assert 0 <= report["retention"]["retention/adapters_off_rate"] <= 1
    for r in (0, 1):
        memory = json.loads((zero3 / f"memory_rank{r}.json").read_text())["peak_rss_bytes"]
        assert 0 < memory["training"] <= memory["end"]


def test_gathered_checkpoint_matches_live_model(zero3):
    """The ZeRO-3 shards gathered into a zhyper checkpoint give the live engine's logits, with no DeepSpeed."""
    code = f"""
import sys, torch
from safetensors.torch import load_file
from zhyper import ZhyperModel
from zhyper.training.config import load_config
from zhyper.training.build import build_base, tokenizer_for
cfg = load_config({str(CONFIGS / 'cpu-tiny.yaml')!r})
base, _ = build_base(cfg, {{}}, tokenizer_for(cfg))
model = ZhyperModel.from_pretrained({str(zero3 / 'final')!r}, base_model=base).eval()
probe = load_file({str(zero3 / 'probe.safetensors')!r})
with torch.no_grad():
    logits = model(input_ids=probe['input_ids'], attention_mask=probe['attention_mask'],
                   context_embeddings=probe['context_embeddings']).logits
print(float((logits - probe['logits']).abs().max()), float(probe['logits'].abs().max()))
assert 'deepspeed' not in sys.modules, 'loading a checkpoint must not need DeepSpeed'
# the base's fingerprint, taken from the partitioned ZeRO-3 base (gathered), matches the rebuilt base
from zhyper.pretrained import load_checkpoint
load_checkpoint(ZhyperModel, {str(zero3 / 'final')!r}, base_model=build_base(cfg, {{}}, tokenizer_for(cfg))[0],
                strict_base=True)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(zero3), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff, scale = map(float, proc.stdout.split()[-2:])
    assert diff < 1e-4 and scale > 1e-2


def test_mlflow_has_the_run(zero3):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{zero3 / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zhyper")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["zero_stage"] == "3"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx(_losses(zero3))
    assert "conditioning_gap" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"zhyper_checkpoint", "peft_example"}


def test_stage0_and_stage3_agree_in_fp32(zero3, runs):
    stage0 = _train(runs / "zero0", ds="zero0.json")
    assert _losses(stage0) == pytest.approx(_losses(zero3), rel=5e-5)  # reduction order differs
    assert _losses(stage0)[0] != pytest.approx(_losses(stage0)[-1], abs=1e-3)  # it did train


def test_resume_reproduces_losses_exactly(zero3, runs):
    out = runs / "resume"
    _train(out, "train.stop_after=2")
    assert len(_losses(out)) == 2 and not (out / "final").exists()
    assert (out / "checkpoints" / "latest").read_text() == "step2"
    with pytest.raises(AssertionError, match="--resume"):
        _train(out)  # refuses to silently start over an existing run
    _train(out, resume=True)
    assert json.loads((out / "losses.json").read_text())["start_step"] == 2
    # the history of the first two steps comes back from the checkpoint; the resumed ones match too
    assert len(_losses(out)) == 4
    assert _losses(out) == pytest.approx(_losses(zero3), abs=1e-6)
    with pytest.raises(AssertionError, match="finished run"):  # nothing left to resume: refused, nothing rewritten
        _train(out, resume=True)
    assert len(_losses(out)) == 4


def test_gradient_accumulation_equals_one_big_batch(zero3, runs, tmp_path):
    """2 micro-steps of 1 example per rank == 1 step of 2 examples per rank (fp32, ZeRO-3)."""
    ds = json.loads((CONFIGS / "zero3.json").read_text())
    ds["gradient_accumulation_steps"] = 2
    (tmp_path / "gas2.json").write_text(json.dumps(ds))
    gas = _train(runs / "gas2", ds=str(tmp_path / "gas2.json"))
    assert _losses(gas) == pytest.approx(_losses(zero3), rel=5e-5)  # fp32 summation order only


def test_two_nodes_agree_with_one_node(zero3, runs, tmp_path):
    """Two launcher invocations (node ranks 0 and 1, no ssh) form one world of two."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = str(_free_port())
    out = runs / "two_nodes"
    procs = []
    for node_rank in (0, 1):
        launcher = [DEEPSPEED, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node_rank),
                    "--master_addr", "127.0.0.1", "--master_port", port]
        cmd = [*launcher, str(REPO / "launch" / "train.py"), "--ds_config", str(CONFIGS / "zero3.json"),
               "--config", str(CONFIGS / "cpu-tiny.yaml"), f"output_dir={out}"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(out), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    assert _losses(out) == pytest.approx(_losses(zero3), rel=5e-5)
