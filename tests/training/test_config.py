"""Run config parsing and validation, the objective, atomic writes and the MLflow tracker."""

from __future__ import annotations

import pytest
import torch

from zhyper.data.chat import IGNORE_INDEX
from zhyper.training.config import build_config, flatten, load_config
from zhyper.training.data import load_data
from zhyper.training.objective import lr_schedule, modulation_penalty, per_example_loss, response_loss_sum

CONFIGS = ["cpu-tiny.yaml", "default.yaml", "askx.yaml", "mistral7b-multinode.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load(name):
    from tests.conftest import REPO

    cfg = load_config(REPO / "launch" / "configs" / name)
    assert cfg.train.max_steps > 0 and cfg.model.rank > 0


def _load_data(cfg):
    return load_data(cfg)


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
    assert cfg.train.lr == 5e-4 and cfg.data.k == 2 and cfg.model.rank == 4 and cfg.output_dir == "/tmp/x"
    assert load_config(None).train.lr != 5e-4  # the override changed something


@pytest.mark.parametrize("override, match", [
    ("trian.lr=1", r"unknown key 'trian'.*known keys of the top level: \[.*'train'"),
    ("train.lrate=1", r"unknown key 'train\.lrate'.*did you mean 'lr'.*known keys of train: \[.*'lr'"),
    ("model.rnak=4", r"unknown key 'model\.rnak'.*known keys of model: \[.*'rank'"),
    ("tiny.hiden_size=8", r"unknown key 'tiny\.hiden_size'.*known keys of tiny"),
    ("train.lr=-1", r"train\.lr must be positive"),
    ("train.lr=.inf", r"train\.lr must be a finite number"),
    ("train.lr=.nan", r"train\.lr must be a finite number"),
    ("train.lr=true", r"train\.lr.*'True' of type 'bool' could not be converted to Float"),
    ("train.max_steps=2.5", r"train\.max_steps.*could not be converted to Integer"),
    ("model.alpha=.inf", r"alpha: expected a positive finite number"),
    ("data.source=web", r"data\.source must be one of"),
    ("data.source=askx", r"data\.path is required"),
    ("train.lr=fast", r"train\.lr.*'fast'.*could not be converted to Float"),
    ("data.contexts=upper_case", r"data\.contexts: expected a list, got 'upper_case' \(str\)"),
    ("train=3", r"train: expected a mapping"),
    ("method=prompt", r"method must be one of \['zhyper', 'lora'\]"),
    ("data.null_context=true data.source=askx data.path=x", r"null_context needs a plain answer"),
])
def test_bad_keys_and_values_are_named(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, override.split(" "))


def test_yaml_numbers_written_as_strings_are_converted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train: {lr: 5e-4, max_steps: 7}\nmodel: {alpha: 8}\n")  # PyYAML reads 5e-4 as a string
    cfg = load_config(path)
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float) and cfg.model.alpha == 8.0
    assert load_config(None).train.lr != 5e-4


def test_override_without_equals_and_malformed_yaml(tmp_path):
    with pytest.raises(ValueError, match="key=value"):
        build_config({}, ["train.lr"])
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


def test_lr_schedule_is_transformers_warmup_then_linear_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lr_schedule(opt, max_steps=10, warmup_ratio=0.2)
    values = []
    for _ in range(10):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert values[:3] == pytest.approx([0.0, 0.5, 1.0]) and values[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    flat = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr_schedule(flat, max_steps=10, warmup_ratio=0.0)
    assert flat.param_groups[0]["lr"] == 1.0  # no warm-up: full rate at once (differs from the warm-up case)


def test_modulation_penalty_is_zero_at_init_only():
    z = torch.ones(2, 3, 2, 4)
    assert float(modulation_penalty(z, "diag", "identity")) == 0.0
    assert float(modulation_penalty(z, "diag", "paper")) == 1.0
    eye = torch.eye(4).expand(2, 3, 2, 4, 4)
    assert float(modulation_penalty(eye, "square", "identity")) == 0.0
    assert float(modulation_penalty(eye + 0.1, "square", "identity")) > 0.0


def test_tracker_logs_to_real_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from zhyper.training.tracking import Tracker

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


def test_description_contrast_rewards_separated_wording_invariant_features():
    from zhyper.training.objective import description_contrast

    torch.manual_seed(0)
    protos = torch.randn(5, 3, 8)  # 5 contexts; features (3, 8) per description
    aligned = description_contrast(protos + 0.01 * torch.randn_like(protos), protos + 0.01 * torch.randn_like(protos),
                                   temperature=0.1)
    collapsed = description_contrast(protos[:1].expand(5, 3, 8), protos[:1].expand(5, 3, 8), temperature=0.1)
    swapped = description_contrast(protos, protos.roll(1, dims=0), temperature=0.1)  # wordings paired wrongly
    assert float(aligned) < 0.05
    assert float(collapsed) == pytest.approx(float(torch.log(torch.tensor(5.0))), abs=1e-4)  # no information
    assert float(swapped) > float(collapsed)
    feats = protos.clone().requires_grad_(True)
    description_contrast(feats, protos[:1].expand(5, 3, 8) + 0.1 * torch.randn(5, 3, 8), temperature=0.1).backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_contrast_needs_a_hypernetwork():
    with pytest.raises(ValueError, match="method 'lora' has none"):
        load_config(None, ["method=lora", "train.contrast_weight=0.1"])


def test_first_response_tokens_can_weigh_more():
    from zhyper.training.objective import response_weights

    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.full((2, 7), IGNORE_INDEX)
    labels[0, 2:] = torch.tensor([1, 2, 3, 4, 5])
    labels[1, 4:] = torch.tensor([6, 7, 8])
    plain, n = response_loss_sum(logits, labels)
    same, n_same = response_loss_sum(logits, labels, weights=response_weights(labels, first=2, weight=1.0))
    torch.testing.assert_close(same, plain)
    assert n_same == n == 8
    w = response_weights(labels, first=2, weight=3.0)
    assert w[0].tolist() == [0, 3, 3, 1, 1, 1] and w[1].tolist() == [0, 0, 0, 3, 3, 1]
    heavy, n_heavy = response_loss_sum(logits, labels, weights=w)
    assert n_heavy == 16.0 and float(heavy) != float(plain)  # the twin: the first tokens count three times
    per = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX,
                                            reduction="none")
    torch.testing.assert_close(heavy, (per * w).sum())


def test_contrast_pairs_give_two_wordings_of_every_context_reproducibly():
    from zhyper.training.step import contrast_pairs

    pools = {"b": ["b1", "b2", "b3"], "a": ["a1", "a2"], "single": ["s"]}
    first, second = contrast_pairs(pools, step=3, seed=0, rank=0)
    assert [x[0] for x in first] == ["a", "b", "s"]  # sorted by context, one row each
    assert all(x != y for x, y in zip(first[:2], second[:2])) and first[2] == second[2] == "s"
    assert contrast_pairs(pools, 3, 0, 0) == (first, second)  # a resumed run draws the same pairs
    draws = {tuple(contrast_pairs(pools, step, 0, 0)[0]) for step in range(20)}
    assert len(draws) > 1  # and other steps draw other pairs
