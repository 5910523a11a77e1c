"""ZLinear forward+backward on a mixed-context batch, as ratios against peers run in the same process.

Every row of the batch has its own modulation (z of shape (r,) in diag mode, Z (r, r) in square
mode); the modulation requires grad, as it does under a hypernetwork. Peers, all with the same
frozen base weight W and the same trained factors A (r, in), B (out, r):

  floor  hand-written LoRA, one shared adapter: F.linear(x, W) + s * F.linear(F.linear(x, A), B)
  peft   peft.tuners.lora.Linear with the same A, B, r, alpha (no modulation: plain LoRA)
  zl     ZLinear (diag / square), the modulation applied to the rank-r activations
  ref    the reference implementation's way: per-sample A' = diag(z)·A (or Z·A), A' and B repeated
         for every token with repeat_interleave, applied with bmm

dtype "bf16" means a bf16 base weight and bf16 input with fp32 adapters (ZLinear's arrangement);
every peer gets the same arrangement (input cast to fp32 for the adapter, result cast back).
The input x requires grad, as inside a network, so the backward pass also computes dL/dx.

Time: the peers run interleaved in rounds (the order rotates each round) and each peer's median
over the rounds is used, so machine noise hits all of them alike. Memory of the adapter path:
``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd keeps for backward; the
bytes of the unique storages among them are summed, leaving out the storages of the input x and
of parameters/modulations (W, A, B, z), which exist whatever the peer. What is left is the
activations the adapter path adds (h, casts of x, per-token weight copies, ...).

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_zlinear.py [--quick] [--rounds N] [--budget S] [--threads N]
          [--features 576,4096] [--dtypes fp32,bf16]
The bf16 4096 case takes long on CPUs without native bf16 GEMMs (each base GEMM step ~20 s here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zhyper.layers.lowrank import modulated_lowrank  # noqa: E402
from zhyper.layers.zlinear import ZLinear, lora_scaling  # noqa: E402

SHAPES = [(8, 128, 576, 8), (4, 256, 4096, 8)]  # (batch, seq, features, rank)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ALPHA = 16.0
TARGETS = {"zl/floor": 1.05, "zl/peft": 1.00, "ref/zl": {576: 4.0, 4096: 2.0}, "mem zl/floor": 1.10}


def _zlinear(base: nn.Linear, A: nn.Parameter, B: nn.Parameter, r: int, mode: str) -> ZLinear:
    """A ZLinear over ``base`` sharing the factors A, B (the peers compare the same weights)."""
    layer = ZLinear.from_linear(base, rank=r, mode=mode, alpha=ALPHA)
    layer.lora_A, layer.lora_B = A, B
    return layer


def peft_linear(W, A, B, r: int, dtype: torch.dtype):
    """PEFT's LoRA Linear holding the same W (out, in), A, B (the tensors themselves, not copies)."""
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLinear

    d_out, d_in = W.shape
    layer = PeftLinear(nn.Linear(d_in, d_out, bias=False, dtype=dtype), "default",
                       config=LoraConfig(r=r, lora_alpha=ALPHA), r=r, lora_alpha=ALPHA)
    layer.base_layer.weight = W
    layer.lora_A["default"].weight = A
    layer.lora_B["default"].weight = B
    return layer


def make_peers(b: int, t: int, d: int, r: int, dtype: torch.dtype):
    """Build the shared tensors and one closure per peer that runs forward and returns y."""
    g = torch.Generator().manual_seed(0)
    s = lora_scaling(ALPHA, r)
    base = nn.Linear(d, d, bias=False, dtype=dtype).requires_grad_(False)
    W = base.weight
    A = nn.Parameter(torch.randn(r, d, generator=g) / d**0.5)
    B = nn.Parameter(torch.randn(d, r, generator=g) / r**0.5)
    x = torch.randn(b, t, d, generator=g).to(dtype).requires_grad_(True)
    z = (1 + 0.1 * torch.randn(b, r, generator=g)).requires_grad_(True)
    Z = (torch.eye(r) + 0.1 * torch.randn(b, r, r, generator=g)).requires_grad_(True)

    zl = {mode: _zlinear(base, A, B, r, mode) for mode in ("diag", "square")}
    peft_layer = peft_linear(W, A, B, r, dtype)
    y0 = F.linear(x, W).detach()  # a constant base output, for the adapter-path-only peers

    def floor(base):
        return base() + (s * F.linear(F.linear(x.float(), A), B)).to(dtype)

    def ref(base, mode):
        a_per_sample = z[:, :, None] * A if mode == "diag" else Z @ A  # (b, r, d)
        a_tok = a_per_sample.repeat_interleave(t, dim=0)  # (b*t, r, d)
        b_tok = B.expand(b, d, r).repeat_interleave(t, dim=0)  # (b*t, d, r)
        h = torch.bmm(x.float().reshape(b * t, 1, d), a_tok.transpose(1, 2))  # (b*t, 1, r)
        delta = torch.bmm(h, b_tok.transpose(1, 2)).reshape(b, t, d)
        return base() + (s * delta).to(dtype)

    def base_gemm():
        return F.linear(x, W)

    def zl_adapter(mode):  # what ZLinear.forward runs after its base GEMM (dropout is off)
        return modulated_lowrank(y0, x, A, B, z if mode == "diag" else Z, s, square=mode == "square")

    peers = {
        "floor": lambda: floor(base_gemm),
        "peft": lambda: peft_layer(x),
        "zl-diag": lambda: zl["diag"](x, modulation=z),
        "zl-square": lambda: zl["square"](x, modulation=Z),
        "ref-diag": lambda: ref(base_gemm, "diag"),
        "ref-square": lambda: ref(base_gemm, "square"),
        "a:floor": lambda: floor(lambda: y0),
        "a:zl-diag": lambda: zl_adapter("diag"),
        "a:zl-square": lambda: zl_adapter("square"),
        "a:ref-diag": lambda: ref(lambda: y0, "diag"),
        "a:ref-square": lambda: ref(lambda: y0, "square"),
    }
    grads = [x, A, B, z, Z]
    fixed = {p.untyped_storage().data_ptr() for p in (x, W, A, B, z, Z)}
    grad_out = torch.randn(b, t, d, generator=g).to(dtype)
    return peers, grads, fixed, grad_out


def saved_bytes(fn, fixed: set[int], grad_out: torch.Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward during fn(), minus inputs/params."""
    seen: dict[int, int] = {}

    def pack(tensor):
        st = tensor.untyped_storage()
        if st.data_ptr() not in fixed:
            seen[st.data_ptr()] = st.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn()
    y.backward(grad_out)
    return sum(seen.values())


def step_time(fn, grads, grad_out) -> float:
    for p in grads:
        p.grad = None
    t0 = time.perf_counter()
    fn().backward(grad_out)
    return time.perf_counter() - t0


def bench(b, t, d, r, dtype_name, max_rounds, budget_s):
    """Medians over interleaved rounds (>= 3; fewer than max_rounds when a round is slow) and saved bytes."""
    peers, grads, fixed, grad_out = make_peers(b, t, d, r, DTYPES[dtype_name])
    names = list(peers)
    t0 = time.perf_counter()
    for n in names:  # warm-up round, also sizes the run
        step_time(peers[n], grads, grad_out)
    per_round = time.perf_counter() - t0
    rounds = max(3, min(max_rounds, int(budget_s / per_round)))
    times = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(names)
        for n in names[k:] + names[:k]:  # rotate the order every round
            times[n].append(step_time(peers[n], grads, grad_out))
    med = {n: statistics.median(v) for n, v in times.items()}
    mem = {n: saved_bytes(peers[n], fixed, grad_out) for n in names if not n.startswith("a:")}
    return med, mem, rounds


def check(key: str, value: float, d: int) -> str | None:
    target = TARGETS[key]
    target = target[d] if isinstance(target, dict) else target
    ok = value >= target if key == "ref/zl" else value <= target
    return None if ok else f"{key} = {value:.3f}, target {'>=' if key == 'ref/zl' else '<='} {target}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small shape only, 3 rounds")
    ap.add_argument("--rounds", type=int, default=15, help="most timed rounds per case (default 15)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds of timed rounds per case; slow cases run fewer rounds, never under 3")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--features", default="576,4096", help="which shapes, by feature size (default 576,4096)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="which dtypes (default fp32,bf16)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    max_rounds = 3 if args.quick else args.rounds
    features = {int(f) for f in args.features.split(",")}
    shapes = [sh for sh in (SHAPES[:1] if args.quick else SHAPES) if sh[2] in features]
    dtypes = [dt for dt in DTYPES if dt in args.dtypes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); times are medians over interleaved rounds")
    hdr = (f"{'shape':<23}{'dtype':<6}{'mode':<7}{'rnds':>5}{'zl ms':>9}{'zl/floor':>9}{'zl/peft':>8}{'ref/zl':>7}"
           f"{'| adapter only:':>15}{'zl/floor':>9}{'ref/zl':>7}"
           f"{'| saved MiB: floor':>19}{'peft':>7}{'zl':>7}{'ref':>7}{'zl/floor':>9}")
    print(hdr)
    print("-" * len(hdr))
    misses = []
    for b, t, d, r in shapes:
        for dt in dtypes:
            med, mem, rounds = bench(b, t, d, r, dt, max_rounds, args.budget)
            for mode in ("diag", "square"):
                zl, ref = med[f"zl-{mode}"], med[f"ref-{mode}"]
                ratios = {"zl/floor": zl / med["floor"], "zl/peft": zl / med["peft"], "ref/zl": ref / zl,
                          "mem zl/floor": mem[f"zl-{mode}"] / mem["floor"]}
                a_floor = med[f"a:zl-{mode}"] / med["a:floor"]
                a_ref = med[f"a:ref-{mode}"] / med[f"a:zl-{mode}"]
                mib = {k: v / 2**20 for k, v in mem.items()}
                print(f"{f'({b},{t},{d}->{d},r{r})':<23}{dt:<6}{mode:<7}{rounds:>5}{zl * 1e3:>9.2f}"
                      f"{ratios['zl/floor']:>9.3f}{ratios['zl/peft']:>8.3f}{ratios['ref/zl']:>7.2f}"
                      f"{'|':>15}{a_floor:>9.3f}{a_ref:>7.2f}"
                      f"{'|':>13}{mib['floor']:>6.2f}{mib['peft']:>7.2f}{mib[f'zl-{mode}']:>7.2f}"
                      f"{mib[f'ref-{mode}']:>7.1f}{ratios['mem zl/floor']:>9.3f}", flush=True)
                misses += [f"({b},{t},{d}) {dt} {mode}: {m}" for m in
                           (check(k, v, d) for k, v in ratios.items()) if m]
    print("targets (whole layer): zl/floor <= 1.05, zl/peft <= 1.00, ref/zl >= 4 (576) / >= 2 (4096), "
          "saved-memory zl/floor <= 1.10")
    print("all targets met" if not misses else "missed:\n  " + "\n  ".join(misses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
