"""``zhyper plan``: the estimate of a run (``zhyper.sizing.memory``), whether it fits, and what to change if not.

``plan(cfg, ds, nodes, gpus_per_node)`` sizes the run's model on the meta device, estimates the memory
of one rank and the step time under the DeepSpeed config, and, when the total exceeds the device,
tries the usual levers cheapest first (gradient checkpointing, ZeRO-3, a smaller micro-batch with more
gradient accumulation, optimizer / parameter offload) and reports which of them fit. When a ZeRO-3
run would also fit with the frozen base replicated (ZeRO-2), it says so: a replicated base is not
all-gathered in every forward and backward pass. ``format_plan`` prints it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from zhyper.sizing.memory import (ASSUMED_INTER_NODE_BYTES_PER_S, ASSUMED_PCIE_BYTES_PER_S, CUDA_USABLE_FRACTION,
                                  GIB, Estimate, ModelSizes, Setting, estimate, model_sizes, setting_from)


def alternatives(sizes: ModelSizes, s: Setting, **kw) -> list[tuple[str, Estimate]]:
    """Changes that lower the memory, cheapest first: checkpointing, ZeRO-3, a smaller micro-batch, offload (GPU)."""
    out: list[tuple[str, Estimate]] = []
    seen = set()

    def consider(label, new):
        if new != s and new not in seen:
            seen.add(new)
            out.append((label, estimate(sizes, new, **kw)))

    r = dataclasses.replace
    if not s.checkpointing:
        consider("train.gradient_checkpointing=true", r(s, checkpointing=True))
    if s.stage < 3:
        consider('"zero_optimization": {"stage": 3}', r(s, stage=3))
        consider('stage 3 + train.gradient_checkpointing=true', r(s, stage=3, checkpointing=True))
    micro, gas, label = s.micro_batch, s.gas, ""
    while micro > 1 and micro % 2 == 0:
        micro, gas = micro // 2, gas * 2
        label = f'"gradient_accumulation_steps": {gas} (micro-batch {micro})'
        consider(label, r(s, micro_batch=micro, gas=gas))
        consider(label + " + checkpointing", r(s, micro_batch=micro, gas=gas, checkpointing=True))
    if s.device == "cpu":  # offloading to the host means nothing when the host is the device
        return out
    base3 = r(s, stage=3, checkpointing=True, micro_batch=micro, gas=gas)
    consider("stage 3 + offload_optimizer (cpu)" + (f" + micro-batch {micro}" if micro != s.micro_batch else "")
             + " + checkpointing", r(base3, offload_optimizer=True))
    consider("stage 3 + offload_param + offload_optimizer (cpu)"
             + (f" + micro-batch {micro}" if micro != s.micro_batch else "") + " + checkpointing",
             r(base3, offload_optimizer=True, offload_param=True))
    return out


def default_device_memory(device: str, gpus_per_node: int) -> int:
    """80 GiB per GPU; on the CPU this machine's RAM shared by the ranks of one node."""
    if device == "cuda":
        return 80 * GIB
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / gpus_per_node)


@dataclass
class Plan:
    cfg: object
    estimate: Estimate
    global_batch: int
    alternatives: list = field(default_factory=list)  # (label, Estimate) when it does not fit
    replicated: Estimate | None = None  # ZeRO-2 with the base replicated, when a ZeRO-3 run would fit that way

    @property
    def fits(self) -> bool:
        return self.estimate.fits


def plan(cfg, ds: dict, nodes: int, gpus_per_node: int, device: str = "cuda", device_memory: int | None = None,
         flops: float | None = None, encoder_params: int | None = None,
         inter_node: float = ASSUMED_INTER_NODE_BYTES_PER_S) -> Plan:
    """The plan of a run: ``ds`` is the DeepSpeed config as ``resolve_ds_config(path, cfg, world)`` returns it."""
    from zhyper import validate

    validate.positive_int("nodes", nodes)
    validate.positive_int("gpus_per_node", gpus_per_node)
    validate.one_of("device", device, ("cuda", "cpu"))
    for name, value in (("flops", flops), ("device_memory", device_memory)):
        if value is not None:
            validate.positive(name, value)
    validate.positive("inter_node", inter_node)
    if encoder_params is not None:
        validate.positive_int("encoder_params", encoder_params)
    mem = device_memory if device_memory is not None else default_device_memory(device, gpus_per_node)
    sizes = model_sizes(cfg, encoder_params)
    s = setting_from(cfg, ds, nodes, gpus_per_node, device, mem)
    kw = dict(flops=flops, inter_node=inter_node)
    est = estimate(sizes, s, **kw)
    global_batch = cfg.data.n_contexts * cfg.data.k
    result = Plan(cfg, est, global_batch)
    if not est.fits:
        result.alternatives = alternatives(sizes, s, **kw)
    elif s.stage == 3 and not s.offload_param and device == "cuda":
        replicated = estimate(sizes, dataclasses.replace(s, stage=2), **kw)
        if replicated.fits:
            result.replicated = replicated
    return result


# ---------------------------------------------------------------------------------------------- printing
def _gib(n: int) -> str:
    return f"{n / GIB:8.2f}" if n else f"{'-':>8}"


def format_plan(p: Plan) -> str:
    e, s, z = p.estimate, p.estimate.setting, p.estimate.sizes
    dev = "GPU" if s.device == "cuda" else "CPU rank (host RAM)"
    out = [f"zhyper plan: {p.cfg.base_model}, {p.cfg.method} {p.cfg.model.mode if p.cfg.method == 'zhyper' else ''} "
           f"r{z.rank} on {[t for t, _, _ in z.adapted]}".replace("  ", " "),
           f"world {s.world} = {s.nodes} node(s) x {s.gpus_per_node} {'GPUs' if s.device == 'cuda' else 'ranks'}, "
           f"{s.device_memory / GIB:.1f} GiB per {dev}; {s.describe()}; global batch {p.global_batch} "
           f"(data.n_contexts x data.k)",
           f"parameters: base {z.base_params:,} (frozen), trained {z.trained_params:,} (hypernetwork "
           f"{z.hypernet_params:,} + shared A/B {z.shared_params:,})",
           "",
           f"{'per rank':<54}{'device GiB' if s.device == 'cuda' else '   RAM GiB':>10}"
           f"{'host GiB' if s.device == 'cuda' else '':>10}   how"]
    for line in e.lines:
        out.append(f"{line.name:<54}{_gib(line.device):>10}{_gib(line.host) if s.device == 'cuda' else '':>10}   "
                   f"{line.how}")
    out.append(f"{'total':<54}{_gib(e.device_total):>10}{_gib(e.host_total) if s.device == 'cuda' else '':>10}")
    frac = f"{100 * CUDA_USABLE_FRACTION:.0f} % of " if s.device == "cuda" else ""
    out.append(f"{'usable (' + frac + f'{s.device_memory / GIB:.1f} GiB)':<54}{_gib(e.usable):>10}")
    if s.device == "cuda":
        out.append(f"host RAM per node (encoder + offloaded states, {s.gpus_per_node} ranks): "
                   f"{s.gpus_per_node * e.host_total / GIB:.1f} GiB, plus the runtime of each rank")
    out.append("")
    if p.fits:
        out.append(f"FITS: {e.device_total / GIB:.2f} GiB of {e.usable / GIB:.2f} GiB usable per "
                   f"{'GPU' if s.device == 'cuda' else 'rank'} ({100 * e.device_total / e.usable:.0f} %).")
    else:
        out.append(f"DOES NOT FIT: {e.device_total / GIB:.2f} GiB needed, {e.usable / GIB:.2f} GiB usable per "
                   f"{'GPU' if s.device == 'cuda' else 'rank'}. What to change:")
        fitting = [(label, a) for label, a in p.alternatives if a.fits]
        for label, a in p.alternatives:
            mark = "fits" if a.fits else "does not fit"
            out.append(f"  - {label}: {a.device_total / GIB:.2f} GiB ({mark}; ~{a.timing.tokens_per_s:,.0f} tokens/s)")
        if fitting:
            out.append(f"  first that fits: {fitting[0][0]}")
        else:
            out.append("  none of these fits: add ranks (--nodes / --gpus-per-node), shorten data.max_length, or use "
                       "a device with more memory")
    if p.replicated is not None:
        r = p.replicated
        out.append(f"note: ZeRO-2 (frozen base replicated, {r.device_total / GIB:.2f} GiB per GPU) would fit too and "
                   f"needs no all-gather of the base in every pass (computed step {r.timing.step_s:.2f} s against "
                   f"{e.timing.step_s:.2f} s).")
    t = e.timing
    out += ["",
            "step time (COMPUTED from assumptions, not measured):",
            f"  {t.flops_per_token / 1e9:.2f} GFLOP per token = {2 + int(s.checkpointing)} passes x (2 x "
            f"{z.active_params:,} active parameters + attention); passes: forward, input-gradient backward"
            + (", recompute" if s.checkpointing else ""),
            f"  {t.tokens_per_step:,} tokens per optimizer step at most (every sequence at data.max_length={s.seq})",
            f"  compute {t.compute_s:.3f} s at an assumed {t.assumed_flops / 1e12:g} TFLOP/s per "
            f"{'GPU' if s.device == 'cuda' else 'rank'}"
            + (f" + communication {t.comm_s:.3f} s (ring collectives; assumed {t.inter_node * 8 / 1e9:g}"
               f" Gbit/s between nodes, {t.intra_node / 1e9:g} GB/s inside one"
               + (f"; offloaded parameters over PCIe at {ASSUMED_PCIE_BYTES_PER_S / 1e9:g} GB/s" if s.offload_param
                  else "") + ")" if t.comm_s else ""),
            f"  => about {t.step_s:.2f} s per step, {t.tokens_per_s:,.0f} tokens/s for the whole run (no overlap of "
            "compute and communication assumed)"]
    return "\n".join(out)
