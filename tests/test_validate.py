"""zhyper.validate: one wording for every refused number, and the CLI options that use it (fast, no models)."""

from __future__ import annotations

import argparse
import math

import pytest

from zhyper import validate
from zhyper.cli import main
from zhyper.validate import OptionError


@pytest.mark.parametrize("check, bad, good, expected", [
    (validate.positive, [0, -5, -1e-9, math.nan, math.inf, -math.inf, True, "3"], [1e-12, 3, 2.5], "a finite number > 0"),
    (validate.non_negative, [-1, -1e-9, math.nan, math.inf, False], [0, 0.0, 7], "a finite number >= 0"),
    (validate.finite, [math.nan, math.inf, -math.inf, None], [0, -3.5, 1e300], "a finite number"),
    (validate.positive_int, [0, -1, 2.0, True, math.nan, "4"], [1, 10**12], "an integer >= 1"),
    (validate.non_negative_int, [-1, 0.5, False], [0, 3], "an integer >= 0"),
])
def test_each_check_refuses_naming_option_value_and_expectation(check, bad, good, expected):
    for value in bad:
        with pytest.raises(OptionError) as err:
            check("--opt", value)
        assert str(err.value) == f"--opt: expected {expected}, got {value!r}"
        assert isinstance(err.value, ValueError)  # callers that catch ValueError keep working
    for value in good:  # the twin: valid values pass, unchanged
        assert check("--opt", value) == value


def test_in_range_and_one_of():
    assert validate.in_range("p", 0.0, 0.0, 1.0) == 0.0 and validate.in_range("p", 1.0, 0.0, 1.0) == 1.0
    with pytest.raises(OptionError, match=r"^p: expected a number in \(0, 1\], got 0\.0$"):
        validate.in_range("p", 0.0, 0.0, 1.0, low_open=True)
    with pytest.raises(OptionError, match=r"^p: expected a number in \[0, 1\), got 1\.0$"):
        validate.in_range("p", 1.0, 0.0, 1.0, high_open=True)
    with pytest.raises(OptionError, match=r"got nan"):
        validate.in_range("p", math.nan, 0.0, 1.0)
    assert validate.one_of("device", "cpu", ("cuda", "cpu")) == "cpu"
    with pytest.raises(OptionError, match=r"^device: expected one of 'cuda', 'cpu', got 'tpu'$"):
        validate.one_of("device", "tpu", ("cuda", "cpu"))


def test_option_is_an_argparse_type_with_the_same_wording(capsys):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--tflops", type=validate.option(validate.positive))
    parser.add_argument("--n", type=validate.option(validate.positive_int, int))
    parser.add_argument("--grid", type=validate.int_list())
    assert vars(parser.parse_args(["--tflops", "2.5", "--n", "3", "--grid", "1,2"])) == \
        {"tflops": 2.5, "n": 3, "grid": (1, 2)}
    for argv, message in [(["--tflops", "-5"], "argument --tflops: expected a finite number > 0, got '-5'"),
                          (["--tflops", "nan"], "argument --tflops: expected a finite number > 0, got 'nan'"),
                          (["--tflops", "fast"], "argument --tflops: expected a number, got 'fast'"),
                          (["--n", "2.5"], "argument --n: expected an integer, got '2.5'"),
                          (["--grid", "1,0"], "argument --grid: expected a non-empty list of integers >= 1, got '1,0'"),
                          (["--grid", "1,x"], "argument --grid: expected comma-separated integers, got '1,x'")]:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def _refused(argv, capsys, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err, err
    assert "Traceback" not in err


PLAN = ["plan", "--config", "launch/configs/mistral7b-multinode.yaml",
        "--ds_config", "launch/configs/ds_zero3_mistral7b.json"]


@pytest.mark.parametrize("option, value, expected", [
    ("--tflops", "-5", "a finite number > 0"), ("--tflops", "0", "a finite number > 0"),
    ("--inter-node-gbps", "0", "a finite number > 0"), ("--gpu-memory", "nan", "a finite number > 0"),
    ("--gpu-memory", "inf", "a finite number > 0"), ("--gpu-memory", "-1", "a finite number > 0"),
    ("--encoder-params", "-1", "an integer >= 1"), ("--nodes", "0", "an integer >= 1"),
    ("--gpus-per-node", "1.5", "an integer"),
])
def test_plan_refuses_bad_numbers(option, value, expected, capsys):
    _refused([*PLAN, option, value], capsys, f"argument {option}: expected {expected}, got {value!r}")


def test_plan_accepts_valid_numbers(capsys, monkeypatch):
    """The twin: the same options with sensible values give a plan (exit 0), the step time from --tflops."""
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    assert main([*PLAN, "--tflops", "200", "--inter-node-gbps", "400", "--gpu-memory", "80",
                 "--encoder-params", "335000000", "--nodes", "2", "--gpus-per-node", "4"]) == 0
    assert "tokens/s" in capsys.readouterr().out


def test_plan_library_refuses_what_the_cli_refuses():
    from zhyper.sizing.plan import plan

    for kwargs, message in [(dict(flops=0.0), "flops: expected a finite number > 0, got 0.0"),
                            (dict(inter_node=math.inf), "inter_node: expected a finite number > 0, got inf"),
                            (dict(encoder_params=-1), "encoder_params: expected an integer >= 1, got -1"),
                            (dict(device_memory=-1), "device_memory: expected a finite number > 0, got -1")]:
        with pytest.raises(ValueError, match=message):
            plan(None, {}, 1, 1, **kwargs)  # refused before the config is looked at


@pytest.mark.parametrize("argv, message", [
    (["--tolerance", "-1"], "argument --tolerance: expected a finite number > 0, got '-1'"),
    (["--tolerance", "nan"], "argument --tolerance: expected a finite number > 0, got 'nan'"),
    (["--draws", "0"], "argument --draws: expected an integer >= 1, got '0'"),
    (["--base-n", "-3"], "argument --base-n: expected an integer >= 1, got '-3'"),
    (["--n-values", "10,-1"], "argument --n-values: expected a non-empty list of integers >= 1, got '10,-1'"),
    (["--layer", "-1"], "argument --layer: expected an integer >= 0, got '-1'"),
    (["--max-prompts", "0"], "argument --max-prompts: expected an integer >= 1, got '0'"),
])
def test_theory_verify_refuses_bad_numbers(argv, message, capsys):
    _refused(["theory", "verify", *argv], capsys, message)


def test_theory_verify_accepts_a_valid_tolerance(tmp_path, capsys):
    """The twin: --tolerance 0.3 (and --draws) run a small sweep."""
    code = main(["theory", "verify", "--quick", "--classes", "diag-l2", "--sweeps", "r", "--draws", "20",
                 "--tolerance", "0.3", "--out", str(tmp_path)])
    assert code in (0, 1) and (tmp_path / "summary.txt").is_file()


def test_theory_library_refuses_a_bad_tolerance():
    from zhyper.theory.verify import VerifyConfig

    with pytest.raises(ValueError, match=r"tolerance: expected a finite number > 0, got -1"):
        VerifyConfig.quick(tolerance=-1)
    with pytest.raises(ValueError, match=r"confidence: expected a number in \(0, 1\), got 1\.5"):
        VerifyConfig.quick(confidence=1.5)
    assert VerifyConfig.quick(tolerance=0.2).tolerance == 0.2


@pytest.mark.parametrize("option, expected", [("--rank", "an integer >= 1"),
                                              *((o, "an integer in [1, 1048576]")  # widths: also bounded above
                                                for o in ("--context-dim", "--latent-dim", "--head-in"))])
def test_params_refuses_non_positive_sizes(option, expected, capsys):
    _refused(["params", option, "0"], capsys, f"argument {option}: expected {expected}, got '0'")
    _refused(["params", option, "-4"], capsys, f"argument {option}: expected {expected}, got '-4'")


def test_params_accepts_valid_sizes(capsys):
    assert main(["params", "--base", "smollm2", "--rank", "2", "--latent-dim", "16", "--head-in", "16"]) == 0
    assert "r=2" in capsys.readouterr().out


def test_chat_refuses_a_bad_max_new_tokens_before_loading_anything(tmp_path, capsys):
    for value in ("0", "-3", "1.5"):
        _refused(["chat", "--checkpoint", str(tmp_path), "--description", "x", "--max-new-tokens", value, "hi"],
                 capsys, "argument --max-new-tokens: expected an integer")
    # the twin: a valid value gets past argparse, to the (missing) checkpoint
    assert main(["chat", "--checkpoint", str(tmp_path), "--description", "x", "--max-new-tokens", "4", "hi"]) == 2
    assert "is not a zhyper checkpoint folder" in capsys.readouterr().err
