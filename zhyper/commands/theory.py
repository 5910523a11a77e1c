"""``zhyper theory verify``: sweep N, r, d_in, d_out, check R̂ <= bound, fit log-log slopes, save CSV + plot.

Writes into --out: rademacher.csv (one row per class and grid point), slopes.csv, rademacher.png,
summary.txt (the printed tables). Exit status 1 when a bound is rejected (its 95% CI lies above it),
or with --strict when a slope is outside its expected range; 0 otherwise.
"""

from __future__ import annotations

import argparse

from zhyper.validate import int_list, non_negative_int, option, positive, positive_int


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="sweep N, r, d_in, d_out per class; table, CSV and plot")
    v.add_argument("--out", default="theory-verify", help="output folder (default: ./theory-verify)")
    v.add_argument("--quick", action="store_true", help="a small sweep (about a second)")
    v.add_argument("--output", choices=("scalar", "vector"), default="scalar",
                   help="scalar output u·ΔW·x (default) or the vector variant (σ per output; slower)")
    v.add_argument("--classes", type=_names, help="comma-separated subset of "
                   "diag-l2,diag-linf,square-fro,square-spec,full-fro,full-box,diag-finite")
    v.add_argument("--sweeps", type=_names, help="comma-separated subset of n,r,d_in,d_out")
    v.add_argument("--n-values", type=int_list(), help="grid of N, e.g. 125,250,500")
    v.add_argument("--r-values", type=int_list(), help="grid of r")
    v.add_argument("--d-values", type=int_list(), help="grid of d_in and d_out")
    v.add_argument("--base-n", type=option(positive_int, int))
    v.add_argument("--base-r", type=option(positive_int, int))
    v.add_argument("--base-d", type=option(positive_int, int))
    v.add_argument("--draws", type=option(positive_int, int), dest="n_draws", help="σ draws per point")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--tolerance", type=option(positive), help="allowed |slope - expected| (default 0.15)")
    v.add_argument("--inputs", help="real layer inputs: a .safetensors file with a (N, d) tensor, or 'smollm2' "
                   "(inputs of a SmolLM2-135M layer's q_proj on the built-in suite's prompts)")
    v.add_argument("--key", help="tensor name inside the --inputs file (default: its only tensor)")
    v.add_argument("--layer", type=option(non_negative_int, int), default=0,
                   help="with --inputs smollm2: the decoder layer index")
    v.add_argument("--module", default="q_proj", help="with --inputs smollm2: the projection (default q_proj)")
    v.add_argument("--max-prompts", type=option(positive_int, int),
                   help="with --inputs smollm2: use only the first K suite prompts")
    v.add_argument("--strict", action="store_true", help="exit 1 when a slope is outside its expected range")


def _load_inputs(args):
    if args.inputs is None:
        return None
    from zhyper.theory.activations import load_tensor_file, smollm2_layer_inputs

    if args.inputs == "smollm2":
        return smollm2_layer_inputs(args.layer, module=args.module, max_prompts=args.max_prompts)
    return load_tensor_file(args.inputs, key=args.key)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from zhyper.io import atomic_write
    from zhyper.theory.report import format_rows, format_slopes, plot, write_csv
    from zhyper.theory.verify import VerifyConfig, run_sweep, slopes

    keys = ("classes", "sweeps", "n_values", "r_values", "d_values", "base_n", "base_r", "base_d", "n_draws",
            "tolerance")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    inputs = _load_inputs(args)
    if args.quick:
        cfg = VerifyConfig.quick(output=args.output, seed=args.seed, inputs=inputs, **overrides)
    else:
        cfg = VerifyConfig.for_output(args.output, seed=args.seed, inputs=inputs, **overrides)
    rows = run_sweep(cfg)
    fitted = slopes(rows, cfg)
    source = "Gaussian inputs" if inputs is None else f"inputs {args.inputs} {tuple(inputs.shape)}"
    if args.inputs == "smollm2":
        source += f" layer {args.layer} {args.module}"
    text = (f"zhyper theory verify ({cfg.output} output, {source}, {cfg.n_draws} σ draws per point, seed {cfg.seed})\n\n"
            f"{format_rows(rows)}\n\nlog-log slopes of R̂\n{format_slopes(fitted)}\n")
    violated = [r for r in rows if not r.holds]
    off = [s for s in fitted if not s.ok]
    text += (f"\nbounds: {len(rows) - len(violated)}/{len(rows)} hold (95% CI of R̂ not above the bound); "
             f"slopes: {len(fitted) - len(off)}/{len(fitted)} within the expected range\n")
    out = Path(args.out)
    write_csv(out / "rademacher.csv", rows)
    if fitted:
        write_csv(out / "slopes.csv", fitted)
    plot(out / "rademacher.png", rows, title=f"empirical Rademacher complexity, {cfg.output} output, {source}")
    atomic_write(out / "summary.txt", text.encode())
    print(text)
    print(f"wrote {out / 'rademacher.csv'}, {out / 'slopes.csv'}, {out / 'rademacher.png'}, {out / 'summary.txt'}")
    return 1 if violated or (args.strict and off) else 0
