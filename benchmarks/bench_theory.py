"""Closed-form Rademacher estimator: 1,000 σ draws, N = 10,000, d = 4,096 (the speed target of the theory tools).

Prints wall time and σ-draws/s for the full-Frobenius class (the sup needs g = σ X / N: one
(S, N) @ (N, d) matmul, S·N·d = 41 GFLOP-ish multiply-adds) and the diag class (X Aᵀ once, then
(S, N) @ (N, r)), and ratios against two peers measured in the same process: the bare matmul of
the same shape (the floor) and a Python loop over σ draws (one matvec per draw, extrapolated
from 20 draws). Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_theory.py
"""

from __future__ import annotations

import argparse
import time

import torch

from zhyper.theory import DiagClass, FullClass, rademacher, rademacher_signs


def _timed(fn, repeat=2):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--rank", type=int, default=8)
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=g)
    u = torch.randn(args.d, generator=g)
    full = FullClass(args.rank, args.d, args.d, readout=u)
    a = torch.nn.functional.normalize(torch.randn(args.rank, args.d, generator=g), dim=1)
    b = torch.randn(args.d, args.rank, generator=g) / args.d ** 0.5
    diag = DiagClass(a, b, 1.0, "l2", readout=u)
    print(f"N = {args.n}, d = {args.d}, r = {args.rank}, {args.draws} σ draws, {torch.get_num_threads()} threads")

    t_full, est = _timed(lambda: rademacher(full, x, n_draws=args.draws))
    t_diag, est_d = _timed(lambda: rademacher(diag, x, n_draws=args.draws))
    sigma = rademacher_signs((args.draws, args.n))
    t_mm, _ = _timed(lambda: sigma @ x)
    k = 20
    t_loop, _ = _timed(lambda: [full.sup(sigma[i:i + 1], x) for i in range(k)], repeat=1)
    t_loop *= args.draws / k

    print(f"full-fro closed form: {t_full:.2f} s, {args.draws / t_full:,.0f} σ-draws/s, R̂ = {est.value:.4g} "
          f"± {est.half_width:.2g}")
    print(f"diag-l2  closed form: {t_diag:.2f} s, {args.draws / t_diag:,.0f} σ-draws/s, R̂ = {est_d.value:.4g} "
          f"± {est_d.half_width:.2g}")
    print(f"peer: bare (S, N) @ (N, d) matmul {t_mm:.2f} s -> full-fro estimator / matmul = {t_full / t_mm:.2f}x")
    print(f"peer: Python loop over σ (extrapolated from {k} draws) {t_loop:.1f} s -> batched is "
          f"{t_loop / t_full:.1f}x faster")


if __name__ == "__main__":
    main()
