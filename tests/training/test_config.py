"""Run config parsing and validation, the objective, atomic writes and the MLflow tracker."""

from __future__ import annotations

import functools

import pytest
import torch

from zhyper.training.config import apply_overrides, build_config, flatten, load_config
from zhyper.training.objective import (IGNORE_INDEX, modulation_penalty, per_example_loss, response_loss_sum,
                                       warmup_decay)

CONFIGS = ["cpu-tiny.yaml", "default.yaml", "askx.yaml", "mistral7b-multinode.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load(name):
    from tests.conftest import REPO

    cfg = load_config(REPO / "launch" / "configs" / name)
    assert cfg.train.max_steps > 0 and cfg.zhyper_config().rank > 0


@functools.lru_cache(maxsize=1)
def _train_script():
    """launch/train.py as a module (the script is not a package module), loaded once."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("zhyper_launch_train", REPO / "launch" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_data(cfg):
    return _train_script().load_data(cfg)


def test_main_job_trains_on_its_listed_contexts():
    from tests.conftest import REPO

    cfg = load_config(REPO / "launch" / "configs" / "default.yaml")
    data = _load_data(cfg)
    assert len(data.seen_contexts) == 8 and len(data.unseen_contexts) == 5
    assert set(data.contexts) == set(cfg.data.contexts) == set(data.examples["context"])
    assert cfg.data.n_contexts <= len(data.seen_contexts)
    full = _load_data(load_config(REPO / "launch" / "configs" / "default.yaml", ["data.contexts=[]"]))
    assert len(full.seen_contexts) == 24  # an empty list means the whole suite
    with pytest.raises(ValueError, match=r"contexts: expected a non-empty list of names .*unknown: \['shouting'\]"):
        _load_data(load_config(None, ["data.contexts=[upper_case, shouting]"]))


def test_defaults_and_overrides_parse_typed_values():
    cfg = load_config(None, ["train.lr=5e-4", "data.k=2", "model.rank=4", "output_dir=/tmp/x"])
    assert cfg.train.lr == 5e-4 and cfg.data.k == 2 and cfg.model["rank"] == 4 and cfg.output_dir == "/tmp/x"
    assert load_config(None).train.lr != 5e-4  # the override changed something


@pytest.mark.parametrize("override, match", [
    ("trian.lr=1", r"unknown key 'trian'.*known keys"),
    ("train.lrate=1", r"unknown key train\.'lrate'.*known keys.*'lr'"),
    ("model.rnak=4", r"unknown key\(s\) model\.rnak.*known model keys"),
    ("train.lr=-1", r"train\.lr must be positive"),
    ("data.source=web", r"data\.source must be builtin, askx or tasks"),
    ("data.source=askx", r"data\.path is required"),
    ("train.lr=fast", r"train\.lr must be a number \(float\), got 'fast'"),
    ("data.contexts=upper_case", r"data\.contexts must be a list of context names, got 'upper_case'"),
])
def test_bad_keys_and_values_are_named(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_override_without_equals_and_malformed_yaml(tmp_path):
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["train.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: malformed YAML"):
        load_config(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_flatten_for_mlflow_params():
    cfg = build_config({"train": {"lr": 0.5}})
    flat = flatten(cfg.to_dict())
    assert flat["train.lr"] == "0.5" and "data.n_contexts" in flat


def test_response_loss_masks_prompt_tokens():
    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 3:] = torch.tensor([1, 2])
    labels[1, 4] = 7
    total, n = response_loss_sum(logits, labels)
    assert n == 3
    expected = sum(torch.nn.functional.cross_entropy(logits[b, t - 1], labels[b, t], reduction="sum")
                   for b, t in [(0, 3), (0, 4), (1, 4)])
    torch.testing.assert_close(total, expected)
    per_sum, per_n = per_example_loss(logits, labels)
    torch.testing.assert_close(per_sum.sum(), total)
    assert per_n.tolist() == [2, 1]
    logits2 = logits.clone()
    logits2[0, 0, 3] += 5.0  # a prompt position: must not change the loss
    assert torch.equal(response_loss_sum(logits2, labels)[0], total)
    logits2[0, 2, 1] += 5.0  # predicts the first response token: must change it
    assert not torch.equal(response_loss_sum(logits2, labels)[0], total)


def test_token_normalised_accumulation_equals_one_big_batch():
    """Summing micro-batch loss sums / total tokens equals the big batch's token mean (unlike mean-of-means)."""
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 9)
    labels = torch.randint(0, 9, (4, 6))
    labels[:, :2] = IGNORE_INDEX
    labels[0, 2:5] = IGNORE_INDEX  # uneven response lengths
    big, n_big = response_loss_sum(logits, labels)
    parts = [response_loss_sum(logits[i:i + 2], labels[i:i + 2]) for i in (0, 2)]
    accumulated = sum(p[0] for p in parts) / sum(p[1] for p in parts)
    torch.testing.assert_close(accumulated, big / n_big)
    mean_of_means = sum(p[0] / p[1] for p in parts) / 2
    assert abs(float(mean_of_means - big / n_big)) > 1e-4


def test_warmup_decay_schedule():
    f = warmup_decay(10, 0.2)
    values = [f(s) for s in range(10)]
    assert values[0] == 0.5 and values[1] == 1.0 and values[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(values[1:], values[2:]))
    assert warmup_decay(10, 0.0)(0) == 1.0


def test_modulation_penalty_is_zero_at_init_only():
    z = torch.ones(2, 3, 2, 4)
    assert float(modulation_penalty(z, "diag", "identity")) == 0.0
    assert float(modulation_penalty(z, "diag", "paper")) == 1.0
    eye = torch.eye(4).expand(2, 3, 2, 4, 4)
    assert float(modulation_penalty(eye, "square", "identity")) == 0.0
    assert float(modulation_penalty(eye + 0.1, "square", "identity")) > 0.0


def test_write_atomic_replaces_whole_file(tmp_path):
    from zhyper.training.checkpoint import write_atomic

    target = tmp_path / "latest"
    write_atomic(target, "step2")
    write_atomic(target, "step4")
    assert target.read_text() == "step4"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]  # no temp file left behind


def test_tracker_logs_to_real_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from zhyper.tracking import Tracker

    t = Tracker(True, tmp_path, experiment="unit")
    t.log_params({"a": "1", "b": "x"})
    for step in range(3):
        t.log_metrics({"loss": 1.0 / (step + 1)}, step)
    (tmp_path / "art.txt").write_text("hello")
    t.log_artifacts(tmp_path / "art.txt")
    t.finish()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(t.run_id)
    assert run.data.params == {"a": "1", "b": "x"} and run.info.status == "FINISHED"
    history = [m.value for m in client.get_metric_history(t.run_id, "loss")]
    assert history == [1.0, 0.5, pytest.approx(1 / 3)]
    assert [a.path for a in client.list_artifacts(t.run_id)] == ["art.txt"]
    silent = Tracker(False, tmp_path / "none")
    silent.log_metrics({"loss": 1.0}, 0)
    silent.finish()
    assert not (tmp_path / "none").exists()  # a non-zero rank writes nothing


def test_param_groups_scale_the_hypernetwork_lr_and_skip_frozen():
    from tests.conftest import tiny_llama
    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.training.objective import param_groups

    model = ZhyperModel.from_base(tiny_llama(), ZhyperConfig(rank=2, context_dim=8, latent_dim=16, head_in=16))
    groups = param_groups(model, weight_decay=0.1, lr=1e-3, hypernet_lr_scale=5.0)
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [(names[id(p)], g["lr"], g["weight_decay"]) for g in groups for p in g["params"]]
    assert len(grouped) == sum(p.requires_grad for p in model.parameters())  # frozen base left out
    assert all(lr == pytest.approx(5e-3) for n, lr, _ in grouped if n.startswith("hypernet."))
    assert all(lr == pytest.approx(1e-3) for n, lr, _ in grouped if not n.startswith("hypernet."))
    decay = {n: wd for n, _, wd in grouped}
    assert decay["base.model.layers.0.self_attn.q_proj.lora_A"] == 0.1
    assert all(wd == 0.0 for n, wd in decay.items() if n.endswith(".bias") or "norm" in n)
    plain = param_groups(model, weight_decay=0.1)  # no lr given: groups inherit the optimizer's lr
    assert all("lr" not in g for g in plain)
