"""Empirical Rademacher complexity of Zhyper's layer classes and the paper's bounds (docs/theory.md).

Names are imported on first use, so ``import zhyper.theory`` stays light::

    from zhyper.theory import DiagClass, SquareClass, FullClass, RealisedClass
    from zhyper.theory import rademacher, monte_carlo_rademacher, all_sigmas
"""

from __future__ import annotations

_LAZY = {
    "DiagClass": "zhyper.theory.classes",
    "SquareClass": "zhyper.theory.classes",
    "FullClass": "zhyper.theory.full",
    "inf_to_one_norm": "zhyper.theory.full",
    "RealisedClass": "zhyper.theory.realised",
    "Estimate": "zhyper.theory.estimators",
    "rademacher": "zhyper.theory.estimators",
    "monte_carlo_rademacher": "zhyper.theory.estimators",
    "all_sigmas": "zhyper.theory.estimators",
    "rademacher_signs": "zhyper.theory.estimators",
    "l2_ball_bound": "zhyper.theory.bounds",
    "linf_ball_bound": "zhyper.theory.bounds",
    "massart_bound": "zhyper.theory.bounds",
    "paper_rate_diag": "zhyper.theory.bounds",
    "paper_rate_full": "zhyper.theory.bounds",
    "VerifyConfig": "zhyper.theory.verify",
    "run_sweep": "zhyper.theory.verify",
    "slopes": "zhyper.theory.verify",
    "fit_slope": "zhyper.theory.verify",
    "load_tensor_file": "zhyper.theory.activations",
    "smollm2_layer_inputs": "zhyper.theory.activations",
}

__all__ = list(_LAZY)

from zhyper._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
