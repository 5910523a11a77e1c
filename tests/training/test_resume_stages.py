"""Every shipped CPU DeepSpeed config resumes through the safe loader to the uninterrupted run's weights.

For ZeRO-2 (``launch/configs/zero2.json``, the README's main job), ZeRO-0, ZeRO-3 with optimizer and
parameter offload, and ZeRO-3 with the bf16 config: a 2-rank run stopped
after step 2 (``train.stop_after=2``) and resumed with ``--resume`` ends with the same final weights,
bit for bit, as a run that was never interrupted (DeepSpeed is deterministic on the CPU). Plain ZeRO-3
is covered by test_train_deepspeed.py / test_faults.py. The allow-list is checked on the real ZeRO-2
optimizer file: as written it loads; with one more (harmless) class inside it is refused.
"""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from tests.training.test_train_deepspeed import _losses, _train

pytestmark = pytest.mark.slow


def _final(out):
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


@pytest.fixture(scope="module", params=["zero2.json", "zero0.json", "zero3_offload.json", "zero3_bf16.json"])
def stage_runs(request, tmp_path_factory):
    ds = request.param
    root = tmp_path_factory.mktemp(ds.split(".")[0])
    whole = _train(root / "whole", ds=ds)
    resumed = _train(root / "resumed", "train.stop_after=2", ds=ds)
    assert (resumed / "checkpoints" / "latest").read_text() == "step2" and not (resumed / "final").exists()
    _train(resumed, ds=ds, resume=True)
    return ds, whole, resumed


def test_resumed_run_ends_with_the_uninterrupted_weights(stage_runs):
    ds, whole, resumed = stage_runs
    a, b = _final(whole), _final(resumed)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=lambda m: f"{ds} {name}: {m}")
    assert _losses(resumed) == _losses(whole)  # the whole history, bit for bit


def test_the_twin_steps_after_the_checkpoint_change_the_weights(stage_runs):
    """The comparison above can fail: the step-2 weights (the resume point) differ from the final ones."""
    from zhyper.training import resume

    ds, whole, resumed = stage_runs
    if ds.startswith("zero3"):
        pytest.skip("ZeRO-3 model states hold no full module weights (its twin: test_train_deepspeed's losses)")

    class _Engine:
        checkpoint_engine = None

    loader = resume.safe_checkpoint_engine(_Engine()).checkpoint_engine
    at_step2 = loader.load(str(resumed / "checkpoints" / "step2" / "mp_rank_00_model_states.pt"), "cpu")["module"]
    final = _final(whole)
    trained = [n for n in final if n in at_step2]
    assert trained, f"{ds}: no trained tensor of final/ in the step-2 module state"
    assert any(not torch.equal(at_step2[n].float(), final[n]) for n in trained)


def test_real_zero2_optimizer_state_loads_and_one_more_class_is_refused(stage_runs, tmp_path):
    from deepspeed.utils.tensor_fragment import fragment_address

    from zhyper.training import resume
    from zhyper.training.resume import CheckpointError

    ds, _, resumed = stage_runs
    if ds != "zero2.json":
        pytest.skip("checked on the ZeRO-2 optimizer file (the one that holds fragment_address)")

    class _Engine:
        checkpoint_engine = None

    loader = resume.safe_checkpoint_engine(_Engine()).checkpoint_engine
    real = resumed / "checkpoints" / "step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state = loader.load(str(real), "cpu")  # DeepSpeed's own classes, fragment_address included
    mappings = state["optimizer_state_dict"]["param_slice_mappings"]
    assert any(isinstance(v, fragment_address) for group in mappings for v in group.values())

    other = tmp_path / real.name
    shutil.copy(real, other)
    planted = torch.load(other, weights_only=False)  # our own file: safe to load fully here
    planted["extra"] = argparse.Namespace(lr=1.0)  # data only, but not a class DeepSpeed's checkpoints hold
    torch.save(planted, other)
    with pytest.raises(CheckpointError, match=r"refusing to load .*: it holds the Python object argparse\.Namespace, "
                                              r"outside zhyper.s allow-list"):
        loader.load(str(other), "cpu")


def test_final_checkpoint_records_the_bases_fingerprint(stage_runs, caplog):
    """The trained checkpoint (written from a weightless base) records the live base's fingerprint: the same base,
    rebuilt, loads under strict_base; one with other weights of the same shapes is refused (the twin)."""
    from tests.training.test_train_deepspeed import CONFIGS
    from zhyper import ZhyperModel
    from zhyper.pretrained import CONFIG_FILE, load_checkpoint
    from zhyper.training.build import build_base, tokenizer_for
    from zhyper.training.config import load_config

    ds, whole, _ = stage_runs
    import json

    recorded = json.loads((whole / "final" / CONFIG_FILE).read_text())["base_model"]["fingerprint"]
    assert recorded and len(recorded["sha256"]) == 64, recorded
    cfg = load_config(str(CONFIGS / "cpu-tiny.yaml"))
    base, _ = build_base(cfg, {}, tokenizer_for(cfg))
    load_checkpoint(ZhyperModel, whole / "final", base_model=base, strict_base=True)
    other, _ = build_base(cfg, {}, tokenizer_for(cfg))
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    with pytest.raises(ValueError, match="weights differ from the one it is loaded on"):
        load_checkpoint(ZhyperModel, whole / "final", base_model=other, strict_base=True)
