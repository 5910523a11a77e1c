"""Re-run the reliability issue's bad inputs and faults against the current library; print one Markdown table.

Each probe does what a careful user would do wrong (or what a fault does) and classifies the outcome
by an explicit check in code, never by eye:

  clear error  an exception of the expected type whose message matches the probe's regex (it names what was
               wrong and what was expected, or where: file, line, field, key), and nothing was damaged
  correct      the right behaviour: the post-condition holds (user files kept, bit-exact unmerge, beams work)
  unclear      an exception, but not one that says what/where (wrong type, or the message misses the regex);
               also a should-work probe that raised
  silent       accepted without error when it should have failed, or data destroyed / written anyway
  see test     needs real (DeepSpeed) training runs: not run here; the covering test is named (found by grep)

Everything is written under one temporary folder (removed at the end); the test fixtures are copied
there first. Uses the tiny random Llama and the small helpers of zhyper.testing. About a minute on 2 cores.

Run:  OMP_NUM_THREADS=1 python tools/probe_reliability.py [--out table.md] [--strict] [--keep-tmp]
      --strict: exit 1 when any probe is silent or more than 5 are unclear (else always exit 0).
"""

from __future__ import annotations

import os

os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})

import argparse
import contextlib
import csv
import functools
import json
import logging
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # zhyper from the source tree when it is not installed

CLEAR, CORRECT, UNCLEAR, SILENT, SEE_TEST, PROBE_ERROR = (
    "clear error", "correct", "unclear", "silent", "see test", "probe error")
GERMAN = "Answer like a German."
UPPER = "Reply in upper case."


@dataclass
class Result:
    verdict: str
    message: str


@dataclass
class Probe:
    name: str
    what: str
    run: Callable[[Ctx], Result]


# ---------------------------------------------------------------- classification helpers
def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def expect_error(call: Callable[[], object], pattern: str, exc: type | tuple = ValueError,
                 damage: Callable[[], str | None] | None = None) -> Result:
    """clear error: ``exc`` raised, message matches ``pattern`` and ``damage()`` finds nothing.

    unclear: another exception type, or a message without what/where; silent: no exception, or
    something was written/destroyed anyway (``damage`` returns what).
    """
    try:
        call()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - argparse and scripts may raise SystemExit
        harm = damage() if damage else None
        if harm:
            return Result(SILENT, f"{harm} (although it raised {_describe(e)})")
        if isinstance(e, exc) and re.search(pattern, str(e), re.DOTALL):
            return Result(CLEAR, _describe(e))
        return Result(UNCLEAR, _describe(e))
    harm = damage() if damage else None
    return Result(SILENT, "accepted without error" + (f"; {harm}" if harm else ""))


def expect_ok(call: Callable[[], object], check: Callable[[object], str | None], ok_message: str) -> Result:
    """correct: ``call`` works and ``check(result)`` returns None; silent: check fails (wrong result or
    data destroyed without a word); unclear: it raised although it should have worked."""
    try:
        value = call()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any exception is a verdict
        return Result(UNCLEAR, f"should work, raised {_describe(e)}")
    problem = check(value)
    return Result(SILENT, problem) if problem else Result(CORRECT, ok_message)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def changed(folder: Path, before: dict[str, bytes]) -> str | None:
    after = snapshot(folder) if folder.is_dir() else {}
    if after == before:
        return None
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    modified = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"{folder.name}/ changed: added {added}, removed {removed}, modified {modified}"


def users_files(out: Path) -> dict[str, bytes]:
    """The user's own files, planted in ``out`` before zhyper writes there."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("my notes")
    (out / "eval").mkdir(exist_ok=True)
    (out / "eval" / "scores.csv").write_text("a,b\n1,2\n")
    return {"README.md": b"my notes", "eval/scores.csv": b"a,b\n1,2\n"}


def kept(out: Path, mine: dict[str, bytes], wrote: list[str]) -> Callable[[object], str | None]:
    def check(_):
        lost = [k for k, v in mine.items() if not (out / k).is_file() or (out / k).read_bytes() != v]
        missing = [w for w in wrote if not (out / w).is_file()]
        if lost:
            return f"the user's files {lost} were deleted or changed"
        if missing:
            return f"returned, but {missing} not written"
        return None
    return check


# ---------------------------------------------------------------- shared, lazily built fixtures
class Ctx:
    def __init__(self, root: Path):
        self.root = root

    def dir(self, name: str) -> Path:
        d = self.root / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        d.mkdir(parents=True, exist_ok=True)
        return d

    @functools.cached_property
    def fixtures(self) -> Path:
        dst = self.root / "fixtures"
        shutil.copytree(REPO / "tests" / "data" / "fixtures", dst)
        return dst

    def model(self):
        """A fresh perturbed ZhyperModel on the tiny random Llama (in memory: no folder recorded)."""
        from zhyper import ZhyperModel
        from zhyper.testing import perturb, small_config, tiny_llama

        return perturb(ZhyperModel.from_base(tiny_llama(), small_config())).eval()

    @functools.cached_property
    def llama_ckpt(self) -> Path:
        """A checkpoint of the in-memory tiny Llama (copy it before damaging it)."""
        out = self.root / "shared" / "llama_ckpt"
        self.model().save_pretrained(out)
        return out

    def ckpt_copy(self, name: str) -> Path:
        dst = self.dir(name) / "ckpt"
        shutil.copytree(self.llama_ckpt, dst)
        return dst

    @functools.cached_property
    def chat_base(self) -> Path:
        """A tiny random Llama saved with SmolLM2's tokenizer (chat template): a real local base folder."""
        from zhyper.testing import tiny_chat_base

        return tiny_chat_base(self.root / "shared" / "base")

    @functools.cached_property
    def chat_model(self):
        from zhyper import ZhyperModel
        from zhyper.testing import perturb, small_config

        return perturb(ZhyperModel.from_base(str(self.chat_base), small_config()), scale=2.0).eval()

    @functools.cached_property
    def chat_ckpt(self) -> Path:
        """A checkpoint whose recorded base is ``chat_base`` (loads with no base_model= argument)."""
        out = self.root / "shared" / "chat_ckpt"
        self.chat_model.save_pretrained(out)
        return out

    @functools.cached_property
    def loaded_from_ckpt(self):
        from zhyper import ZhyperModel

        return ZhyperModel.from_pretrained(self.chat_ckpt).eval()

    def config_only_base(self, name: str) -> Path:
        """A base folder with config.json only: loading its weights would fail, so an error naming the
        checkpoint's problem proves the check ran before the base loaded."""
        from zhyper.testing import tiny_llama

        folder = self.dir(name) / "config_only_base"
        tiny_llama().config.save_pretrained(folder)
        return folder


# ---------------------------------------------------------------- 1. writes
def p_save_keeps(ctx: Ctx) -> Result:
    out = ctx.dir("save_keeps") / "out"
    mine = users_files(out)
    model = ctx.model()
    return expect_ok(lambda: (model.save_pretrained(out), model.save_pretrained(out)),
                     kept(out, mine, ["zhyper_config.json", "model.safetensors"]),
                     "saved twice: README.md and eval/scores.csv kept, zhyper_config.json + model.safetensors written")


def p_export_keeps(ctx: Ctx) -> Result:
    out = ctx.dir("export_keeps") / "out"
    mine = users_files(out)
    model = ctx.model()
    return expect_ok(lambda: (model.export_peft(GERMAN, out), model.export_peft(GERMAN, out)),
                     kept(out, mine, ["adapter_config.json", "adapter_model.safetensors"]),
                     "exported twice: README.md and eval/scores.csv kept, adapter files written")


def p_merge_keeps(ctx: Ctx) -> Result:
    out = ctx.dir("merge_keeps") / "out"
    mine = users_files(out)
    model = ctx.model()
    return expect_ok(lambda: (model.merge(GERMAN, out), model.merge(GERMAN, out)),
                     kept(out, mine, ["config.json", "model.safetensors"]),
                     "merged twice: README.md and eval/scores.csv kept, config.json + model.safetensors written")


def _generate_cli(ckpt: Path, out: Path):
    from zhyper.cli import main

    return main(["generate", "--checkpoint", str(ckpt), "--description", "x", "--out", str(out)])


def p_cli_out_is_checkpoint(ctx: Ctx) -> Result:
    ck = ctx.chat_ckpt
    before = snapshot(ck)
    return expect_error(lambda: _generate_cli(ck, ck),
                        r"--out .* is the --checkpoint folder .*never writes into a folder it reads from",
                        damage=lambda: changed(ck, before))


def p_cli_out_inside_checkpoint(ctx: Ctx) -> Result:
    ck = ctx.chat_ckpt
    before = snapshot(ck)
    return expect_error(lambda: _generate_cli(ck, ck / "adapter"),
                        r"--out .*adapter is the --checkpoint folder .*\(or inside it\)",
                        damage=lambda: changed(ck, before))


def p_export_into_loaded_ckpt(ctx: Ctx) -> Result:
    model, ck = ctx.loaded_from_ckpt, ctx.chat_ckpt
    before = snapshot(ck)
    return expect_error(lambda: model.export_peft(GERMAN, ck),
                        r"export_peft: output folder .* is the checkpoint folder .* this model was loaded from",
                        damage=lambda: changed(ck, before))


def p_merge_into_loaded_ckpt(ctx: Ctx) -> Result:
    model, ck = ctx.loaded_from_ckpt, ctx.chat_ckpt
    before = snapshot(ck)
    return expect_error(lambda: model.merge(GERMAN, ck),
                        r"merge: output folder .* is the checkpoint folder .* this model was loaded from",
                        damage=lambda: changed(ck, before))


def p_save_into_base(ctx: Ctx) -> Result:
    model, base = ctx.chat_model, ctx.chat_base
    before = snapshot(base)
    return expect_error(lambda: model.save_pretrained(base),
                        r"save_pretrained: output folder .* is the base model's folder",
                        damage=lambda: changed(base, before))


def p_merge_into_base(ctx: Ctx) -> Result:
    model, base = ctx.chat_model, ctx.chat_base
    before = snapshot(base)
    return expect_error(lambda: model.merge(GERMAN, base),
                        r"merge: output folder .* is the base model's folder",
                        damage=lambda: changed(base, before))


# ---------------------------------------------------------------- 2. non-finite values
def _override(*overrides: str):
    from zhyper.training.config import load_config

    return lambda: load_config(None, list(overrides))


def p_lr_inf(ctx: Ctx) -> Result:
    return expect_error(_override("train.lr=inf"), r"train\.lr must be a finite number, got inf")


def p_lr_nan(ctx: Ctx) -> Result:
    return expect_error(_override("train.lr=.nan"), r"train\.lr must be a finite number, got nan")


def p_lr_true_yaml(ctx: Ctx) -> Result:
    from zhyper.training.config import load_config

    path = ctx.dir("lr_true") / "run.yaml"
    path.write_text("train:\n  lr: true\n")
    return expect_error(lambda: load_config(path), r"run\.yaml: train\.lr\b.*bool")


def p_config_alpha_nan(ctx: Ctx) -> Result:
    from zhyper import ZhyperConfig

    return expect_error(lambda: ZhyperConfig(alpha=float("nan")), r"alpha: expected a positive finite number, got nan")


def p_zlinear_alpha_nan(ctx: Ctx) -> Result:
    from zhyper.layers.zlinear import ZLinear

    return expect_error(lambda: ZLinear(6, 5, rank=2, alpha=float("nan")),
                        r"alpha must be a positive finite number, got nan")


def _merge_case(in_features: int, out_features: int, rank: int, dtype, seed: int):
    """A diag ZLinear with random W in ``dtype``, |A|, |B|, |z| in [0.5, 1.5] (ΔW far from 0), as the tests build it."""
    import torch

    from zhyper.layers.zlinear import ZLinear

    g = torch.Generator().manual_seed(seed)
    layer = ZLinear(in_features, out_features, rank=rank, mode="diag", alpha=float(rank), dtype=dtype, bias=False)

    def away_from_zero(*shape):
        return (0.5 + torch.rand(shape, generator=g)) * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)

    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
        layer.lora_A.copy_(away_from_zero(rank, in_features))
        layer.lora_B.copy_(away_from_zero(out_features, rank))
    return layer, away_from_zero(rank)


def p_zlinear_merge_nan(ctx: Ctx) -> Result:
    import torch

    layer, z = _merge_case(6, 5, 3, torch.float32, seed=0)
    original = layer.weight.detach().clone()
    z[1] = float("nan")

    def damage():
        if layer.merged:
            return "the layer says it is merged"
        if not torch.equal(layer.weight, original):
            return f"the base weight changed ({int((layer.weight != original).sum())} entries)"
        return None
    return expect_error(lambda: layer.merge(z), r"merge: ΔW of this ZLinear .* non-finite values", damage=damage)


def _overflow_modulation(model) -> None:
    """Every trained tensor finite, but the q_proj head's output overflows float32 (as tests/test_export.py)."""
    import torch

    with torch.no_grad():
        net = model.hypernet
        h = net.hidden(model.encode_descriptions([GERMAN])) - net.hidden(net.context_center[None])
        net.heads["q_proj"].weight.copy_(3e38 * torch.sign(h[0, 0, 0]).expand_as(net.heads["q_proj"].weight))
        net.heads["q_proj"].bias.fill_(2e38)


def p_model_merge_nan_modulation(ctx: Ctx) -> Result:
    import torch

    model = ctx.model()
    _overflow_modulation(model)
    z = model.modulation_for([GERMAN])
    zs = z.values() if isinstance(z, dict) else [z]
    if all(torch.isfinite(t).all() for t in zs):
        return Result(PROBE_ERROR, "setup: could not make the modulation non-finite")
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    out = ctx.dir("model_merge_nan") / "merged"

    def damage():
        after = model.base.state_dict()
        diff = [k for k in before if not torch.equal(before[k], after[k])]
        if diff:
            return f"base weights changed: {diff[:3]}"
        return f"{out.name}/ was written" if out.exists() else None
    return expect_error(lambda: model.merge(GERMAN, out),
                        r"merge: the hypernetwork's modulation for .*tensor modulation\[.*\] has \d+ non-finite",
                        damage=damage)


def _nan_in_hypernet(model) -> None:
    import torch

    with torch.no_grad():
        model.hypernet.heads["v_proj"].bias[1] = float("nan")


def p_save_nan(ctx: Ctx) -> Result:
    model = ctx.model()
    _nan_in_hypernet(model)
    out = ctx.dir("save_nan") / "ckpt"
    return expect_error(lambda: model.save_pretrained(out),
                        r"save_pretrained: nothing was written .*tensor hypernet\.heads\.v_proj\.bias has 1 non-finite",
                        damage=lambda: f"{out.name}/ was written" if out.exists() else None)


def p_export_nan(ctx: Ctx) -> Result:
    model = ctx.model()
    _nan_in_hypernet(model)
    out = ctx.dir("export_nan") / "adapter"
    return expect_error(lambda: model.export_peft(GERMAN, out),
                        r"export_peft: .*tensor hypernet\.heads\.v_proj\.bias has 1 non-finite",
                        damage=lambda: f"{out.name}/ was written" if out.exists() else None)


# ---------------------------------------------------------------- 3. loaders
CAPITALS = ['{"country": "France", "capital": "Paris"}', '{"country": "Japan", "capital": "Tokyo"}']


def _caps_jsonl(ctx: Ctx, name: str, bad_line: str) -> Path:
    path = ctx.dir(name) / "caps.jsonl"
    path.write_text("\n".join([CAPITALS[0], bad_line, CAPITALS[1]]) + "\n")
    return path


def _load_caps(ctx: Ctx, path: Path, **kwargs):
    from zhyper.data import load_tasks

    return lambda: load_tasks(ctx.fixtures / "tasks", {"capitals": str(path)}, **kwargs)


def p_jsonl_no_response(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "jsonl_no_response", '{"country": "Kenya"}')
    return expect_error(_load_caps(ctx, path), r"caps\.jsonl line 2: response field 'capital' is missing")


def p_jsonl_no_prompt(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "jsonl_no_prompt", '{"capital": "Nairobi"}')
    return expect_error(_load_caps(ctx, path), r"caps\.jsonl line 2: field 'country' is missing")


def p_jsonl_null(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "jsonl_null", '{"country": "Kenya", "capital": null}')
    return expect_error(_load_caps(ctx, path), r"caps\.jsonl line 2: response field 'capital' is null")


def p_jsonl_empty(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "jsonl_empty", '{"country": "Kenya", "capital": ""}')
    return expect_error(_load_caps(ctx, path), r"caps\.jsonl line 2: response field 'capital' is empty")


def p_jsonl_nan(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "jsonl_nan", '{"country": "Kenya", "capital": NaN}')
    return expect_error(_load_caps(ctx, path), r"caps\.jsonl line 2: response field 'capital' is nan")


def p_jsonl_list(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "jsonl_list", '{"country": ["Kenya"], "capital": "Nairobi"}')
    return expect_error(_load_caps(ctx, path), r"caps\.jsonl line 2: field 'country' is a list")


def p_jsonl_parse(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "jsonl_parse", '{"country": "Kenya", "capital": "Nairobi"')
    return expect_error(_load_caps(ctx, path), r"caps\.jsonl line 2: not valid JSON")


def p_csv_field_count(ctx: Ctx) -> Result:
    path = ctx.dir("csv_fields") / "caps.csv"
    path.write_text("country,capital\nFrance,Paris\nPeru,Lima,extra\n")
    return expect_error(_load_caps(ctx, path), r"caps\.csv line 3: 3 fields, but the header has 2")


def p_task_no_usable_rows(ctx: Ctx) -> Result:
    path = ctx.dir("task_empty") / "caps.jsonl"
    path.write_text('{"country": "Kenya"}\n{"country": "Peru", "capital": null}\n')
    return expect_error(_load_caps(ctx, path, skip_bad_rows=True),
                        r"data_files\['capitals'\]: no usable rows in .*caps\.jsonl.*\(2 skipped\)")


def p_task_latin1(ctx: Ctx) -> Result:
    path = ctx.dir("task_latin1") / "caps.csv"
    path.write_bytes("country,capital\nFrance,Paris\nCôte d'Ivoire,Yamoussoukro\nRéunion,Saint-Denis\n"
                     .encode("latin-1"))

    def check(data):
        got = getattr(data, "decode_errors", None)
        if got != {str(path.resolve()): 2}:
            return f"decode_errors is {got!r}, expected 2 for caps.csv (bytes replaced without a count)"
        return None
    return expect_ok(_load_caps(ctx, path), check,
                     "loaded with U+FFFD; decode_errors == {caps.csv: 2} (and a warning naming the first line)")


def p_task_skip_counts(ctx: Ctx) -> Result:
    path = _caps_jsonl(ctx, "task_skip", '{"country": "Kenya"}')

    def check(data):
        if data.examples["response"] != ["Paris", "Tokyo"]:
            return f"rows {data.examples['response']!r}, expected ['Paris', 'Tokyo']"
        if data.skipped != {str(path.resolve()): 1}:
            return f"skipped is {data.skipped!r}, expected 1 for caps.jsonl"
        return None
    return expect_ok(_load_caps(ctx, path, skip_bad_rows=True), check,
                     "skip_bad_rows=True: 2 good rows kept, skipped == {caps.jsonl: 1}")


def _askx_copy(ctx: Ctx, name: str) -> Path:
    root = ctx.dir(name) / "askx"
    shutil.copytree(ctx.fixtures / "askx", root)
    return root


def _rewrite_csv(path: Path, change) -> None:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(change(rows))


def p_askx_no_title(ctx: Ctx) -> Result:
    from zhyper.data import AskXSetting, load_askx

    root = _askx_copy(ctx, "askx_no_title")

    def drop(rows):
        i = rows[0].index("submission_title")
        return [r[:i] + r[i + 1:] for r in rows]
    _rewrite_csv(root / "csv" / "AskLemuria.csv", drop)
    setting = AskXSetting(seen=("cul_Atlantis",), unseen=("cul_Lemuria",))
    return expect_error(lambda: load_askx(root, setting=setting),
                        r"AskLemuria\.csv: no column 'submission_title'")


def p_askx_no_usable_rows(ctx: Ctx) -> Result:
    from zhyper.data import AskXSetting, load_askx

    root = _askx_copy(ctx, "askx_empty")
    _rewrite_csv(root / "csv" / "AskLemuria.csv", lambda rows: [rows[0]] + [r[:-1] + [" "] for r in rows[1:]])
    setting = AskXSetting(seen=("cul_Atlantis",), unseen=("cul_Lemuria",))
    return expect_error(lambda: load_askx(root, setting=setting),
                        r"AskLemuria\.csv: culture 'cul_Lemuria' has no usable row \(3 skipped: line 2")


def p_askx_latin1(ctx: Ctx) -> Result:
    from zhyper.data import AskXSetting, load_askx

    root = _askx_copy(ctx, "askx_latin1")
    path = root / "csv" / "AskLemuria.csv"
    path.write_bytes(path.read_bytes().replace(b"Barley soup.", "Barley soup très bon.".encode("latin-1")))

    def check(data):
        got = getattr(data, "decode_errors", None)
        if got != {"AskLemuria.csv": 1}:
            return f"decode_errors is {got!r}, expected {{'AskLemuria.csv': 1}}"
        return None
    return expect_ok(lambda: load_askx(root, setting=AskXSetting(seen=("cul_Lemuria",))), check,
                     "loaded with U+FFFD; decode_errors == {AskLemuria.csv: 1}")


# ---------------------------------------------------------------- 4. merge / unmerge
def p_bf16_round_trip(ctx: Ctx) -> Result:
    import torch

    layer, z = _merge_case(64, 64, 8, torch.bfloat16, seed=12)
    original = layer.weight.detach().clone()

    def round_trips():
        moved = []
        for _ in range(3):
            layer.merge(z)
            moved.append(int((layer.weight != original).sum()))
            layer.unmerge()
        return moved

    def check(moved):
        if min(moved) < 1000:
            return f"merge changed only {moved} weights: the round trip test would be vacuous"
        diff = int((layer.weight != original).sum())
        return f"after unmerge {diff} of 4096 bf16 weights differ from the original" if diff else None
    return expect_ok(round_trips, check,
                     "3 merge/unmerge round trips (each merge changed >1000 weights): bit-identical after unmerge")


def p_state_dict_merged(ctx: Ctx) -> Result:
    import torch
    from torch import nn

    from zhyper.layers.zlinear import ZLinear

    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
    model[0] = ZLinear.from_linear(model[0], rank=2)
    nn.init.normal_(model[0].lora_B)
    model[0].merge(torch.ones(2))
    return expect_error(model.state_dict, r"state_dict: ZLinear 0 is merged.*call unmerge\(\)", exc=RuntimeError)


# ---------------------------------------------------------------- 5. checkpoints
def _load(ckpt: Path, base):
    from zhyper import ZhyperModel

    return lambda: ZhyperModel.from_pretrained(ckpt, base_model=base)


def p_ckpt_bad_json(ctx: Ctx) -> Result:
    ck = ctx.ckpt_copy("ckpt_bad_json")
    text = (ck / "zhyper_config.json").read_text()
    (ck / "zhyper_config.json").write_text(text[: len(text) // 2])
    return expect_error(_load(ck, str(ctx.config_only_base("ckpt_bad_json"))),
                        r"zhyper_config\.json: malformed JSON at line \d+, column \d+")


def p_ckpt_missing_field(ctx: Ctx) -> Result:
    ck = ctx.ckpt_copy("ckpt_missing_field")
    record = json.loads((ck / "zhyper_config.json").read_text())
    record.pop("layout")
    (ck / "zhyper_config.json").write_text(json.dumps(record))
    return expect_error(_load(ck, str(ctx.config_only_base("ckpt_missing_field"))),
                        r"zhyper_config\.json: missing field 'layout'")


def p_ckpt_truncated(ctx: Ctx) -> Result:
    ck = ctx.ckpt_copy("ckpt_truncated")
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) - 100])
    # the base holds config.json only: an error about the weights file proves it was checked first
    return expect_error(_load(ck, str(ctx.config_only_base("ckpt_truncated"))),
                        r"model\.safetensors is truncated or corrupt")


def p_ckpt_model_type(ctx: Ctx) -> Result:
    from zhyper.testing import tiny_mistral

    ck = ctx.ckpt_copy("ckpt_model_type")
    return expect_error(_load(ck, tiny_mistral()),
                        r"trained on a 'llama' base model .* is a 'mistral' model; pass base_model=")


def p_ckpt_tiny_llama(ctx: Ctx) -> Result:
    model = ctx.model()
    model.base_model_id = "tiny-llama"  # what the training recipe records for its random test base
    ck = ctx.dir("ckpt_tiny_llama") / "ckpt"
    model.save_pretrained(ck)
    return expect_error(_load(ck, None), r"trained on 'tiny-llama'.*Pass base_model=")


# ---------------------------------------------------------------- 6. generation
def p_generate_beams(ctx: Ctx) -> Result:
    model = ctx.chat_model
    prompts, descriptions = ["What is the capital of France?", "Name a colour."], [GERMAN, UPPER]
    kwargs = {"max_new_tokens": 4, "num_beams": 2, "num_return_sequences": 2}

    def check(beams):
        if not (isinstance(beams, list) and len(beams) == 4 and all(isinstance(a, str) for a in beams)):
            return f"expected 4 strings (2 prompts x 2 sequences), got {beams!r}"[:300]
        alone = model.generate(prompts[1:], descriptions[1:], **kwargs)
        if beams[2:] != alone:
            return f"prompt 2's sequences {beams[2:]!r} differ from the prompt alone {alone!r}"
        return None
    return expect_ok(lambda: model.generate(prompts, descriptions, **kwargs), check,
                     "2 prompts x 2 sequences = 4 strings; each prompt's sequences equal that prompt run alone")


# ---------------------------------------------------------------- 7. run-config typos
def p_tiny_typo(ctx: Ctx) -> Result:
    return expect_error(_override("tiny.hiden_size=8"), r"unknown key 'tiny\.hiden_size'.*did you mean 'hidden_size'")


def p_tiny_typo_yaml(ctx: Ctx) -> Result:
    from zhyper.training.config import load_config

    path = ctx.dir("tiny_typo_yaml") / "run.yaml"
    path.write_text("tiny:\n  hiden_size: 8\n")
    return expect_error(lambda: load_config(path),
                        r"run\.yaml: unknown key 'tiny\.hiden_size'.*did you mean 'hidden_size'")


def p_top_level_typo(ctx: Ctx) -> Result:
    return expect_error(_override("trian.lr=1"), r"unknown key 'trian'.*did you mean 'train'.*known keys of the top")


def p_contexts_not_list(ctx: Ctx) -> Result:
    return expect_error(_override("data.contexts=upper_case"), r"data\.contexts: expected a list, got 'upper_case'")


# ---------------------------------------------------------------- 8. needs real training runs: the covering tests
SEE_TESTS = [
    ("kill -9 mid-save, resume", "SIGKILL launcher+ranks while step4 is written; --resume",
     "tests/training/test_faults.py", "test_kill_9_while_saving_then_resume_gives_the_uninterrupted_losses"),
    ("launcher killed", "SIGKILL the deepspeed launcher only; ranks must exit",
     "tests/training/test_faults.py", "test_killing_the_launcher_stops_every_rank"),
    ("second run, same output_dir", "start a 2nd run on a folder in use",
     "tests/training/test_faults.py", "test_a_second_live_run_on_the_same_folder_is_refused_naming_the_first"),
    ("planted pickle", "os.system payload in a ZeRO state file, manifest rewritten; --resume",
     "tests/training/test_faults.py", "test_resume_refuses_a_planted_pickle_even_with_a_matching_manifest"),
    ("planted pickle (loader)", "safe checkpoint loader on a pickled os.system payload",
     "tests/training/test_resume.py", "test_safe_loader_refuses_pickled_code_and_loads_deepspeed_state"),
    ("damaged latest checkpoint", "truncate a step4 optimizer file; --resume",
     "tests/training/test_faults.py", "test_a_damaged_checkpoint_is_named_with_the_one_to_fall_back_to"),
    ("damaged latest (manifest)", "manifest check names step4 and `--resume step2`",
     "tests/training/test_resume.py", "test_damaged_latest_names_the_previous_complete_checkpoint"),
    ("lr=1e30, non-finite loss", "train.lr=1e30: stop before final/ or a bad checkpoint",
     "tests/training/test_faults.py", "test_a_diverging_run_stops_before_writing_anything"),
    ("losses.json keeps history", "stop_after=2, --resume: losses.json has all 4 steps",
     "tests/training/test_train_deepspeed.py", "test_resume_reproduces_losses_exactly"),
    ("resume a finished run", "--resume on an output_dir whose run reached max_steps (final/ written): refused",
     "tests/training/test_train_deepspeed.py", "test_resume_reproduces_losses_exactly"),
    ("fresh-machine conversion race", "rank 1 of a gloo group converts SmolLM2 while rank 0 waits",
     "tests/test_base_model.py", "test_rank_one_converts_under_a_process_group"),
]


def see_test(path: str, name: str) -> Result:
    text = (REPO / path).read_text()
    if re.search(rf"^def {re.escape(name)}\(", text, re.MULTILINE):
        return Result(SEE_TEST, f"{path}::{name}")
    return Result(SEE_TEST, f"NOT FOUND: {path}::{name}")


PROBES = [
    Probe("1 save_pretrained keeps user files", "save_pretrained twice into a folder holding README.md + eval/",
          p_save_keeps),
    Probe("1 export_peft keeps user files", "export_peft twice into a folder holding README.md + eval/",
          p_export_keeps),
    Probe("1 merge(out_dir) keeps user files", "merge(out_dir=) twice into a folder holding README.md + eval/",
          p_merge_keeps),
    Probe("1 generate --out CK", "`zhyper generate --checkpoint CK --description x --out CK`",
          p_cli_out_is_checkpoint),
    Probe("1 generate --out CK/adapter", "`zhyper generate --checkpoint CK ... --out CK/adapter`",
          p_cli_out_inside_checkpoint),
    Probe("1 export_peft into its checkpoint", "from_pretrained(CK).export_peft(d, CK)", p_export_into_loaded_ckpt),
    Probe("1 merge into its checkpoint", "from_pretrained(CK).merge(d, CK)", p_merge_into_loaded_ckpt),
    Probe("1 save onto the source (base) folder", "from_base(BASE).save_pretrained(BASE)", p_save_into_base),
    Probe("1 merge onto the source (base) folder", "from_base(BASE).merge(d, BASE)", p_merge_into_base),
    Probe("2 train.lr=inf", "load_config(None, ['train.lr=inf'])", p_lr_inf),
    Probe("2 train.lr=.nan", "load_config(None, ['train.lr=.nan'])", p_lr_nan),
    Probe("2 lr: true", "load_config(run.yaml) with `train: {lr: true}`", p_lr_true_yaml),
    Probe("2 ZhyperConfig alpha=nan", "ZhyperConfig(alpha=nan)", p_config_alpha_nan),
    Probe("2 ZLinear alpha=nan", "ZLinear(6, 5, rank=2, alpha=nan)", p_zlinear_alpha_nan),
    Probe("2 ZLinear.merge NaN modulation", "layer.merge(z) with z[1]=NaN; weight must stay", p_zlinear_merge_nan),
    Probe("2 model.merge NaN modulation", "merge(d, out) where the q_proj head overflows to inf/NaN",
          p_model_merge_nan_modulation),
    Probe("2 save_pretrained NaN tensor", "hypernet.heads.v_proj.bias[1]=NaN; save_pretrained(new)", p_save_nan),
    Probe("2 export_peft NaN tensor", "hypernet.heads.v_proj.bias[1]=NaN; export_peft(d, new)", p_export_nan),
    Probe("3 jsonl row without response", "load_tasks: line 2 `{\"country\": \"Kenya\"}`", p_jsonl_no_response),
    Probe("3 jsonl row without prompt field", "load_tasks: line 2 `{\"capital\": \"Nairobi\"}`", p_jsonl_no_prompt),
    Probe("3 jsonl null field", "load_tasks: line 2 `\"capital\": null`", p_jsonl_null),
    Probe("3 jsonl empty response", "load_tasks: line 2 `\"capital\": \"\"`", p_jsonl_empty),
    Probe("3 jsonl NaN response", "load_tasks: line 2 `\"capital\": NaN` (bare NaN, accepted by json)", p_jsonl_nan),
    Probe("3 jsonl list prompt field", "load_tasks: line 2 `\"country\": [\"Kenya\"]`", p_jsonl_list),
    Probe("3 jsonl parse error", "load_tasks: line 2 missing the closing brace", p_jsonl_parse),
    Probe("3 CSV wrong field count", "load_tasks: caps.csv line 3 `Peru,Lima,extra`", p_csv_field_count),
    Probe("3 AskX CSV without submission_title", "load_askx: column dropped from AskLemuria.csv", p_askx_no_title),
    Probe("3 task with zero usable rows", "load_tasks(skip_bad_rows=True): every row bad", p_task_no_usable_rows),
    Probe("3 culture with zero usable rows", "load_askx: every comment_body blank in AskLemuria.csv",
          p_askx_no_usable_rows),
    Probe("3 Latin-1 bytes (tasks)", "load_tasks: caps.csv written in Latin-1; check decode_errors", p_task_latin1),
    Probe("3 Latin-1 bytes (AskX)", "load_askx: one Latin-1 'è' in AskLemuria.csv; check decode_errors",
          p_askx_latin1),
    Probe("3 skip_bad_rows counts", "load_tasks(skip_bad_rows=True): 1 bad line of 3; check skipped",
          p_task_skip_counts),
    Probe("4 bf16 64x64 merge/unmerge", "ZLinear bf16 64x64 r8 diag: merge+unmerge x3, compare bits",
          p_bf16_round_trip),
    Probe("4 state_dict while merged", "Sequential(ZLinear, ReLU): merge, then state_dict()", p_state_dict_merged),
    Probe("5 malformed zhyper_config.json", "config JSON cut in half; from_pretrained", p_ckpt_bad_json),
    Probe("5 zhyper_config.json missing field", "'layout' removed; from_pretrained", p_ckpt_missing_field),
    Probe("5 truncated model.safetensors", "last 100 bytes cut; base_model= a config-only folder", p_ckpt_truncated),
    Probe("5 base model_type mismatch", "llama checkpoint, base_model=tiny Mistral (same q/v shapes)",
          p_ckpt_model_type),
    Probe("5 checkpoint of base 'tiny-llama'", "base_model_id='tiny-llama'; from_pretrained(CK)", p_ckpt_tiny_llama),
    Probe("6 generate with beams", "generate(2 prompts, num_beams=2, num_return_sequences=2)", p_generate_beams),
    Probe("7 typo inside tiny: (override)", "load_config(None, ['tiny.hiden_size=8'])", p_tiny_typo),
    Probe("7 typo inside tiny: (YAML)", "load_config(run.yaml) with `tiny: {hiden_size: 8}`", p_tiny_typo_yaml),
    Probe("7 unknown top-level key", "load_config(None, ['trian.lr=1'])", p_top_level_typo),
    Probe("7 list field given a string", "load_config(None, ['data.contexts=upper_case'])", p_contexts_not_list),
] + [Probe(f"8 {name}", what, (lambda ctx, p=path, t=test: see_test(p, t))) for name, what, path, test in SEE_TESTS]


# ---------------------------------------------------------------- report
def cell(text: str, limit: int | None = None) -> str:
    text = " ".join(str(text).split())
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def table(rows: list[tuple[Probe, Result]], root: Path) -> str:
    lines = ["| probe | what was done | verdict | message |", "|---|---|---|---|"]
    for probe, result in rows:
        message = result.message.replace(str(root.resolve()), "$TMP").replace(str(root), "$TMP")
        lines.append(f"| {cell(probe.name)} | {cell(probe.what)} | {result.verdict} | {cell(message, 120)} |")
    return "\n".join(lines)


def count_line(rows: list[tuple[Probe, Result]]) -> str:
    n = {v: sum(r.verdict == v for _, r in rows) for v in (CLEAR, CORRECT, UNCLEAR, SILENT, SEE_TEST, PROBE_ERROR)}
    run = len(rows) - n[SEE_TEST]
    line = (f"{run} probes: {n[CLEAR]} clear errors, {n[CORRECT]} correct, {n[UNCLEAR]} unclear, {n[SILENT]} silent"
            f" (+ {n[SEE_TEST]} listed as 'see test')")
    if n[PROBE_ERROR]:
        line += f"; {n[PROBE_ERROR]} probe errors (the probe's own setup failed)"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the table (and the count line) to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any probe is silent or more than 5 unclear")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("-k", dest="select", help="run only probes whose name contains this text")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.ERROR)  # before zhyper's CLI would configure INFO logging
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="zhyper-probe-"))
    rows = []
    try:
        ctx = Ctx(root)
        # what the library prints while probed (DeepSpeed's accelerator notice, the CLI's output path)
        # goes to stderr, so stdout holds only the table
        with contextlib.redirect_stdout(sys.stderr):
            for probe in PROBES:
                if args.select and args.select not in probe.name:
                    continue
                torch.manual_seed(0)
                t = time.perf_counter()
                try:
                    result = probe.run(ctx)
                except Exception as e:  # noqa: BLE001 - the probe's own setup broke, not a verdict
                    result = Result(PROBE_ERROR, f"{_describe(e)} @ {traceback.extract_tb(e.__traceback__)[-1].name}")
                print(f"[{time.perf_counter() - t:5.1f}s] {probe.name}: {result.verdict}", file=sys.stderr, flush=True)
                rows.append((probe, result))
        text = table(rows, root)
    finally:
        if args.keep_tmp:
            print(f"temporary folder kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = count_line(rows)
    wall = f"wall time {time.perf_counter() - t0:.1f} s"
    print(text)
    print()
    print(summary)
    print(wall)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"{text}\n\n{summary}\n{wall}\n")
    silent = sum(r.verdict == SILENT for _, r in rows)
    unclear = sum(r.verdict == UNCLEAR for _, r in rows)
    return 1 if args.strict and (silent or unclear > 5) else 0


if __name__ == "__main__":
    sys.exit(main())
