"""ZhyperLM in lm-evaluation-harness: adapters off is lm-eval's own ``hf`` model, document by document;
a description changes the results, two descriptions never leak into each other."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lm_eval")

from tests.evaluation.bench_fixtures import benchmark_dirs  # noqa: E402
from tests.model_helpers import perturb, small_config, tiny_chat_base  # noqa: E402

DESC_A = "Pick the more practical way to reach an everyday goal."
DESC_B = "Answer like a pirate would, with lots of arr."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    from zhyper import ZhyperModel
    from zhyper.evaluation.harness import ZhyperLM
    from zhyper.evaluation.lm_tasks import local_task_config

    root = tmp_path_factory.mktemp("harness")
    base = tiny_chat_base(root / "base")
    model = perturb(ZhyperModel.from_base(str(base), small_config()), scale=2.0).eval()
    data, _ = benchmark_dirs(root)
    manager = TaskManager()
    specs = {t: local_task_config(t, data, manager) for t in ("piqa", "gsm8k")}
    return {"base": base, "lm": ZhyperLM(model=model, batch_size=4), "specs": specs, "manager": manager}


def evaluate(lm, spec, manager, **kwargs) -> list[dict]:
    """lm-eval's logged samples of one task, in document order."""
    from lm_eval import simple_evaluate

    raw = simple_evaluate(model=lm, tasks=[spec], log_samples=True, task_manager=manager, bootstrap_iters=0,
                          gen_kwargs={"max_gen_toks": 6}, **kwargs)
    return sorted(raw["samples"][spec["task"]], key=lambda s: s["doc_id"])


def loglikelihoods(samples: list[dict]) -> torch.Tensor:
    return torch.tensor([r[0][0] for s in samples for r in s["resps"]], dtype=torch.float64)


def generations(samples: list[dict]) -> list[str]:
    return [s["resps"][0][0] for s in samples]


@pytest.fixture(scope="module")
def hf_samples(setup):
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=str(setup["base"]), device="cpu", dtype="float32", batch_size=4)
    return {t: evaluate(hf, spec, setup["manager"]) for t, spec in setup["specs"].items()}


def test_adapters_off_equals_lm_evals_hf_model_multiple_choice(setup, hf_samples):
    lm = setup["lm"]
    lm.condition(None)
    ours = evaluate(lm, setup["specs"]["piqa"], setup["manager"])
    assert len(ours) == 6 and [s["doc_id"] for s in ours] == [s["doc_id"] for s in hf_samples["piqa"]]
    torch.testing.assert_close(loglikelihoods(ours), loglikelihoods(hf_samples["piqa"]), rtol=0, atol=1e-5)
    lm.condition(DESC_A)  # the twin: a modulation must move every loglikelihood
    conditioned = loglikelihoods(evaluate(lm, setup["specs"]["piqa"], setup["manager"]))
    assert (conditioned - loglikelihoods(hf_samples["piqa"])).abs().min() > 1e-4


def test_adapters_off_equals_lm_evals_hf_model_generation(setup, hf_samples):
    lm = setup["lm"]
    lm.condition(None)
    ours = evaluate(lm, setup["specs"]["gsm8k"], setup["manager"])
    assert generations(ours) == generations(hf_samples["gsm8k"])
    assert all(g for g in generations(ours))  # the tiny model does generate something
    lm.condition(DESC_A, weights=4.0)  # the twin: a strong modulation changes what is generated
    assert generations(evaluate(lm, setup["specs"]["gsm8k"], setup["manager"])) != generations(ours)


def test_two_descriptions_do_not_leak_into_each_other(setup):
    from zhyper.evaluation.harness import ZhyperLM

    lm, spec, manager = setup["lm"], setup["specs"]["piqa"], setup["manager"]
    lm.condition(DESC_A)
    a1 = loglikelihoods(evaluate(lm, spec, manager))
    lm.condition(DESC_B)
    b = loglikelihoods(evaluate(lm, spec, manager))
    lm.condition(DESC_A)
    a2 = loglikelihoods(evaluate(lm, spec, manager))
    torch.testing.assert_close(a2, a1, rtol=0, atol=0)  # B left nothing behind
    assert (a1 - b).abs().max() > 1e-3  # and A and B do differ
    fresh = ZhyperLM(model=lm.zhyper, description=DESC_B, batch_size=4)
    torch.testing.assert_close(loglikelihoods(evaluate(fresh, spec, manager)), b, rtol=0, atol=0)
    assert all(layer.modulation is None for layer in _zlinears(lm.zhyper))  # nothing stays installed


def _zlinears(model):
    from zhyper.layers.zlinear import ZLinear

    return [m for m in model.base.modules() if isinstance(m, ZLinear)]


def test_weights_follow_compose_spelling(setup):
    lm, spec, manager = setup["lm"], setup["specs"]["piqa"], setup["manager"]
    lm.condition(None)
    off = loglikelihoods(evaluate(lm, spec, manager))
    lm.condition(DESC_A, weights=0.0)  # weight 0 is the base model exactly
    torch.testing.assert_close(loglikelihoods(evaluate(lm, spec, manager)), off, rtol=0, atol=1e-5)
    lm.condition([DESC_A, DESC_B], weights=[1.0, 1.0])
    both = loglikelihoods(evaluate(lm, spec, manager))
    assert (both - off).abs().max() > 1e-3
    with pytest.raises(ValueError, match="weights"):
        lm.condition(None, weights=1.0)


def test_description_in_prompt_reaches_the_prompt_only(setup):
    lm, spec, manager = setup["lm"], setup["specs"]["piqa"], setup["manager"]
    lm.condition(None)
    samples = evaluate(lm, spec, manager, system_instruction=DESC_A)
    assert all(s["arguments"][0][0].startswith(DESC_A) for s in samples)
    plain = evaluate(lm, spec, manager)
    assert not any(s["arguments"][0][0].startswith(DESC_A) for s in plain)


def test_registered_by_name_for_simple_evaluate(setup, tmp_path):
    import lm_eval.api.registry as registry

    import zhyper.evaluation.harness as harness

    assert registry.get_model("zhyper") is harness.ZhyperLM
    lm = setup["lm"]
    lm.zhyper.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "desc.txt").write_text(f"{DESC_A}\n\n", encoding="utf-8")
    by_name = registry.get_model("zhyper").create_from_arg_string(
        f"checkpoint={tmp_path / 'ckpt'},description_file={tmp_path / 'desc.txt'},batch_size=4")
    assert by_name.description == [DESC_A]
    lm.condition(DESC_A)
    torch.testing.assert_close(loglikelihoods(evaluate(by_name, setup["specs"]["piqa"], setup["manager"])),
                               loglikelihoods(evaluate(lm, setup["specs"]["piqa"], setup["manager"])),
                               rtol=0, atol=1e-6)


def test_bad_arguments_are_clear_errors(setup, tmp_path):
    from zhyper.evaluation.harness import ZhyperLM

    with pytest.raises(ValueError, match="exactly one of checkpoint="):
        ZhyperLM()
    with pytest.raises(FileNotFoundError, match="description_file"):
        ZhyperLM(model=setup["lm"].zhyper, description_file=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="numbers separated by"):
        ZhyperLM(model=setup["lm"].zhyper, description=DESC_A, weights="a|b")


@pytest.mark.slow
def test_lm_evals_own_command_line_runs_the_zhyper_model(setup, tmp_path):
    """``python -m zhyper.evaluation.harness run --model zhyper ...`` is lm-eval's CLI with the model registered."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.serving.conftest import make_checkpoint

    ckpt = make_checkpoint(tmp_path)
    spec = setup["specs"]["piqa"]
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "piqa_local.yaml").write_text(yaml.safe_dump({
        "include": str(setup["manager"].task_index["piqa"].yaml_path), "task": "piqa_local", "dataset_path": "json",
        "dataset_name": None, "dataset_kwargs": spec["dataset_kwargs"], "training_split": None}))
    (tmp_path / "desc.txt").write_text(DESC_A + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "zhyper.evaluation.harness", "run", "--model", "zhyper", "--model_args",
         f"checkpoint={ckpt},description_file={tmp_path / 'desc.txt'}", "--batch_size", "4", "--tasks", "piqa_local",
         "--include_path", str(tmp_path / "inc"), "--device", "cpu", "--output_path", str(tmp_path / "res")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "piqa_local" in out.stdout and "acc" in out.stdout
    results = list((tmp_path / "res").rglob("results_*.json"))
    assert results and "zhyper_description" in results[0].read_text()


def test_peft_condition_is_lm_evals_hf_model_with_the_exported_adapter(setup, tmp_path):
    """The `peft` condition (lm-eval's own hf model + a PEFT folder) on Zhyper's export of a description gives
    what ZhyperLM gives under that description; adapters off is the twin that differs."""
    from argparse import Namespace

    from zhyper.commands.eval_benchmarks import _peft_lm

    lm, spec, manager = setup["lm"], setup["specs"]["piqa"], setup["manager"]
    lm.zhyper.export_peft(DESC_A, tmp_path / "adapter")
    peft_lm = _peft_lm(Namespace(peft=str(tmp_path / "adapter"), batch_size=4), lm.zhyper)()
    exported = loglikelihoods(evaluate(peft_lm, spec, manager))
    lm.condition(DESC_A)
    torch.testing.assert_close(exported, loglikelihoods(evaluate(lm, spec, manager)), rtol=0, atol=1e-4)
    lm.condition(None)
    assert (exported - loglikelihoods(evaluate(lm, spec, manager))).abs().max() > 1e-3
