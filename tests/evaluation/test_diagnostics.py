"""Failure signatures (collapse, context ignorance) on modulations whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zhyper.evaluation.diagnostics import COLLAPSE_SPREAD, IGNORANCE_SHARE, diagnose, effective_rank

TYPES = ("q_proj", "v_proj")


def test_a_worked_example():
    """Two descriptions, two layers, one type, one value: z = [[1, 3], [3, 5]] (description x layer)."""
    d = diagnose(torch.tensor([[1.0, 3.0], [3.0, 5.0]]).reshape(2, 2, 1, 1), ("q_proj",))
    # layer means 2 and 4, deviations ±1: spreads 1/2 and 1/4; SS_desc = 4, SS_pos = 2·((2-3)² + (4-3)²) = 4
    assert (d.spread_min, d.spread_max, d.spread_median) == (0.25, 0.5, 0.375)
    assert d.description_share == 0.5
    assert d.effective_rank == pytest.approx(1.0)  # the two deviations are opposite: one direction


def test_the_same_z_for_every_description_is_collapse():
    z = (1 + torch.randn(1, 4, 2, 8)).expand(6, -1, -1, -1)
    d = diagnose(z, TYPES)
    assert d.spread_median == 0 and d.collapsed and "collapse to the mean" in " ".join(d.warnings())


def test_z_driven_by_position_is_context_ignorance_and_by_description_is_not():
    g = torch.Generator().manual_seed(0)
    position = torch.randn(1, 4, 2, 8, generator=g)
    description = torch.randn(6, 1, 1, 8, generator=g)
    ignorant = diagnose(1 + position + 0.05 * description, TYPES)
    healthy = diagnose(1 + 0.01 * position + description, TYPES)
    assert ignorant.ignores_descriptions and ignorant.description_share < IGNORANCE_SHARE
    assert not ignorant.collapsed  # it varies with the description, just far less than with the position
    assert not healthy.ignores_descriptions and not healthy.collapsed and healthy.warnings() == []
    assert healthy.description_share > 0.99


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), layers=st.integers(2, 4), k=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_shares_split_the_total_sum_of_squares(n, layers, k, seed):
    """SS_desc + SS_pos is the sum of squares around each type's grand mean; the share lies in [0, 1]."""
    z = torch.randn(n, layers, 2, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    d = diagnose(z, TYPES)
    total = sum(float((z[:, :, t] - z[:, :, t].mean((0, 1))).pow(2).sum()) for t in range(2))
    ss_desc = float((z - z.mean(0)).pow(2).sum())
    assert 0 <= d.description_share <= 1
    assert d.description_share == pytest.approx(ss_desc / total, rel=1e-9)
    # the twin: shifting every description's z by its own constant changes what moves with the description
    shifted = diagnose(z + torch.arange(n, dtype=z.dtype).view(n, 1, 1, 1) * 10, TYPES)
    assert shifted.description_share > d.description_share


def test_effective_rank_counts_independent_directions():
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)
    assert effective_rank(torch.ones(4, 3)) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(3, 3)) == 0.0


def test_one_description_is_refused():
    with pytest.raises(ValueError, match="expected at least 2, got 1"):
        diagnose(torch.ones(1, 2, 2, 4), TYPES)


def test_full_mode_dict_output_is_read_per_type():
    g = torch.Generator().manual_seed(1)
    z = {"q_proj": torch.randn(3, 2, 10, generator=g), "v_proj": torch.randn(3, 2, 7, generator=g)}
    d = diagnose(z, TYPES)
    assert set(d.spread_by_type) == set(TYPES) and not math.isnan(d.description_share)


def _hypernet(position_embeddings: bool, randomize: bool):
    from zhyper.config import ZhyperConfig
    from zhyper.hyper.hypernet import HyperNetwork
    from zhyper.hyper.spec import HyperNetConfig

    settings_ = {**ZhyperConfig(hyper_dropout=0.0, latent_dim=16, head_in=16, rank=4).hypernet_fields(),
                 "position_embeddings": position_embeddings}
    net = HyperNetwork(HyperNetConfig(context_dim=6, n_layers=3, module_types=TYPES,
                                      features={"q_proj": (12, 12), "v_proj": (12, 4)}, **settings_))
    if randomize:
        torch.manual_seed(0)
        with torch.no_grad():
            for head in net.heads.values():
                head.weight.normal_(0, 0.5)
                head.bias.normal_(0, 0.5)
    return net.eval()


def test_a_fresh_hypernetwork_is_collapsed_and_a_trained_one_is_not():
    from zhyper.evaluation.diagnostics import diagnose_hypernet

    emb = torch.randn(8, 6)
    assert diagnose_hypernet(_hypernet(True, randomize=False), emb).collapsed  # zero heads: z = 1 everywhere
    assert not diagnose_hypernet(_hypernet(True, randomize=True), emb).collapsed


def test_without_position_embeddings_every_layer_and_type_shares_z():
    """The ablation's hypernetwork: one z per description (all its variation moves with the description)."""
    from zhyper.evaluation.diagnostics import diagnose_hypernet

    emb = torch.randn(5, 6)
    shared = _hypernet(False, randomize=True)
    with torch.no_grad():
        z = shared(emb)
    torch.testing.assert_close(z, z[:, :1, :1].expand_as(z))
    assert (z[0] - z[1]).abs().max() > 1e-3  # it still depends on the description
    assert diagnose_hypernet(shared, emb).description_share == pytest.approx(1.0)
    with torch.no_grad():  # the twin: with position embeddings, layers differ
        z_pos = _hypernet(True, randomize=True)(emb)
    assert (z_pos[:, 0] - z_pos[:, 1]).abs().max() > 1e-3
    assert len(shared.heads) == 1 and not hasattr(shared, "layer_embedding")


def test_inspect_command_flags_a_collapsed_checkpoint_and_passes_a_trained_one(tmp_path, capsys):
    from zhyper.cli import main
    from zhyper.model import ZhyperModel
    from zhyper.serving.contexts import save_contexts
    from zhyper.testing import OWN_CONTEXTS, make_checkpoint, small_config, tiny_chat_base

    trained = make_checkpoint(tmp_path / "trained")  # perturbed heads
    assert main(["inspect", str(trained)]) == 0
    assert "healthy" in capsys.readouterr().out
    fresh = ZhyperModel.from_base(str(tiny_chat_base(tmp_path / "base")), small_config())  # zero heads: z = 1
    fresh.save_pretrained(tmp_path / "fresh")
    save_contexts(tmp_path / "fresh", OWN_CONTEXTS)
    assert main(["inspect", str(tmp_path / "fresh"), "--json"]) == 1
    assert '"diagnostics.collapsed": 1.0' in capsys.readouterr().out
    lines = tmp_path / "one.txt"
    lines.write_text("Only one description.\n")
    assert main(["inspect", str(trained), "--descriptions", str(lines)]) == 2
    assert "holds 1 description(s)" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2  # not a checkpoint: one line, exit 2
