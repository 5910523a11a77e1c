"""Per-rank memory and step time of a Zhyper run, from its run config and DeepSpeed JSON alone (``zhyper plan``).

The base model is built on the meta device from its config (no weights, no download), ZLinear is
injected and the hypernetwork built as the run would build them, so every parameter count is that
of the real modules. The estimate per rank (N = nodes x GPUs ranks, c = bytes of the run's dtype:
2 for bf16, 4 for fp32) is the sum of

* base parameters (frozen), ``c·P_base``; ZeRO-3 partitions them (``c·P_base/N``, parameters at or
  below ``stage3_param_persistence_threshold`` elements stay whole on every rank), stages 0-2 replicate
  them; ``offload_param`` moves the partition to the host;
* ZeRO-3's gathered parameters (``gathered_elements``): the largest unit it gathers plus a prefetched
  one, or, once DeepSpeed keeps what it will reuse, up to ``stage3_max_live_parameters``; ``c`` bytes
  each, twice that on the CPU (gloo gathers through a second flat buffer);
* trained parameters (shared A/B + hypernetwork), ``c·P_train`` (``/N`` under ZeRO-3);
* gradients, ``c·P_train`` (``/N`` from stage 2), plus an fp32 copy of this rank's gradient partition
  with bf16 (``4·P_train/N``; ``4·P_train`` at stage 0), plus the gradient reduce bucket
  (``reduce_bucket_size`` elements from stage 1, two with ``overlap_comm`` at stages 1-2; on the CPU
  only the touched part, ``min(bucket, P_train)``, is resident);
* optimizer states: AdamW's two fp32 states, ``8·P_train``, plus fp32 master weights ``4·P_train``
  (bf16, or any ZeRO stage >= 1, which always keeps an fp32 partition), ``/N`` from stage 1;
  ``offload_optimizer`` moves them (and the fp32 gradients) to the host;
* activations of one micro-batch of b sequences of t tokens (``data.max_length``), see
  ``activation_bytes_per_token``, L layers, with and without gradient checkpointing;
* logits and loss: ``b·t·V·(c + 12)`` (the logits in the run's dtype, and at the start of backward three
  fp32 (b·t, V) buffers: the log-softmax output, its gradient and the gradient of the logits); on the
  CPU activations and logits x ``CPU_HEAP_FACTOR`` (freed intermediates the heap keeps);
* the sentence encoder (fp32 on the host: ``ContextEncoder`` runs on the CPU);
* the runtime: on the CPU the measured resident set of a rank without any model
  (``CPU_RUNTIME_BYTES``, ``zhyper.sizing.runtime``); on a GPU an assumed CUDA context + cuBLAS
  workspace + NCCL buffers (``CUDA_RUNTIME_BYTES``).

The step time is computed, never measured: training FLOPs per token are (2 + 2 [+ 2]) · N_active
(forward, the input-gradient backward of the frozen base, the recompute with checkpointing; the
familiar 6·N of full fine-tuning has a weight-gradient pass the frozen base does not need) plus the
attention terms, over an assumed sustained throughput; ZeRO-3 adds all-gathers of the frozen base
at an assumed bandwidth. docs/planning.md has the derivations and the cross-checks against real runs.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30

# Peak RSS of one CPU rank without any model: imports, gloo process group, DeepSpeed engine machinery
# (on a trivial module), tokenizer and training rows. Measured on the 2-core development machine with
# `python -m zhyper.sizing.runtime --config launch/configs/cpu-tiny.yaml --ds_config launch/configs/zero<s>.json`
# (torch 2.13.0, transformers 5.24.0, deepspeed 0.19.8). Stage 1 uses the stage-2 figure.
CPU_RUNTIME_BYTES = {0: 668_356_608, 1: 698_073_088, 2: 698_073_088, 3: 702_021_632}
# On the CPU a forward + backward grows the RSS by more than what autograd keeps: glibc's heap retains the
# freed intermediates of every layer between the tensors that stay. Measured with
# benchmarks/bench_checkpointing.py (SmolLM2-135M, fp32, micro-batch 4, seq 256 and 512): the peak RSS grew by
# 1.26-1.28x the activations + logits estimate without checkpointing and 1.41-1.42x with it.
CPU_HEAP_FACTOR = 1.3
# Assumed (no GPU was available to measure it): CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers.
CUDA_RUNTIME_BYTES = 1 * GIB
# Fraction of a GPU's memory the estimate may fill (the rest: allocator fragmentation, spikes).
CUDA_USABLE_FRACTION = 0.9
# Assumed sustained throughput per rank (FLOP/s) for the step-time estimate. GPU: 40 % of an A100's
# 312 TFLOP/s dense bf16. CPU: measured here, benchmarks/bench_train.py (SmolLM2, seq 128, micro-batch 4,
# 59 tokens/s per rank at 4·N = 0.54 GFLOP per token: 32 GFLOP/s per rank on one core each).
ASSUMED_FLOPS = {"cuda": 125e12, "cpu": 30e9}
# Assumed bandwidths for ZeRO-3's all-gathers: one 100 Gbit/s link per node between nodes, NVLink-class
# inside a node. Not used on the CPU (gloo over shared memory; not modelled).
ASSUMED_INTER_NODE_BYTES_PER_S = 100e9 / 8
ASSUMED_INTRA_NODE_BYTES_PER_S = 150e9
# Assumed host <-> GPU bandwidth (PCIe 4.0 x16, sustained) for offloaded parameters.
ASSUMED_PCIE_BYTES_PER_S = 25e9

DS_DEFAULTS = {"reduce_bucket_size": 500_000_000, "stage3_prefetch_bucket_size": 50_000_000,
               "stage3_param_persistence_threshold": 100_000, "stage3_max_live_parameters": 1_000_000_000,
               "stage3_max_reuse_distance": 1_000_000_000}
# On the CPU, gloo's all_gather_into_tensor gathers into a flat buffer and copies it into the output: its peak
# is twice the gathered bytes (measured: 190 MiB gathered, +383 MiB peak RSS; docs/planning.md).
GLOO_GATHER_FACTOR = 2

# Which tensor each adapted module reads (several modules reading one tensor keep it once).
_INPUT_SITE = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "attn_out",
               "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "mlp_act"}


# ---------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class ModelSizes:
    """What the estimate needs from the built model (counts of the real modules, on the meta device)."""

    base_name: str
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    base_params: int  # frozen parameters (tied weights once)
    base_numels: tuple[int, ...]  # each frozen parameter's size (persistence threshold)
    largest_unit: int  # parameters of the largest unit ZeRO-3 gathers at once (decoder layer, embedding, head)
    trained_params: int
    trained_numels: tuple[int, ...]
    hypernet_params: int
    shared_params: int
    adapted: tuple[tuple[str, int, int], ...]  # (module type, in_features, out_features)
    rank: int
    encoder: str
    encoder_params: int | None

    @property
    def active_params(self) -> int:
        """Parameters that multiply every token: the base without its input embedding (the head counts)."""
        return self.base_params - (0 if self.tied else self.vocab * self.hidden)


def base_hf_config(cfg):
    """The HF config of the run's base model: the bundled config of a known base, a random base as the recipe
    builds it, or ``AutoConfig`` of a local path / cached hub id."""
    from zhyper import bases

    base = bases.find(cfg.base_model)
    if base is not None and base.config:
        return base.hf_config()
    from zhyper.training import build

    if base is not None and base.source == "random":
        return build.base_config(cfg, build.tokenizer_for(cfg))
    try:
        return build.base_config(cfg, None)
    except (OSError, ValueError) as err:
        random = sorted(b.name for b in bases.BASES.values() if b.source == "random")
        known = sorted(b.hub_id for b in bases.BASES.values() if b.config)
        raise ValueError(f"base_model {cfg.base_model!r}: its config could not be read ({err}); expected a local "
                         f"path, a cached hub id, {' or '.join(map(repr, random))} or a known base {known}"
                         ) from None


def _decoder_layers(hf) -> list:
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in hf.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"{type(hf).__name__}: found no decoder layers (GradientCheckpointingLayer)")
    return layers


def model_sizes(cfg, encoder_params: int | None = None) -> ModelSizes:
    """Build the run's model on the meta device and read every count the estimate needs."""
    from zhyper.bases import meta_model
    from zhyper.sizing.known_models import KNOWN_ENCODER_PARAMS

    hf_config = base_hf_config(cfg)
    if cfg.method == "zhyper" and cfg.model.resolved_context_dim() is None:
        raise ValueError(f"model.encoder {cfg.model.encoder!r} is not a known encoder; set model.context_dim "
                         "(its embedding size) so the hypernetwork can be sized without loading it")
    if cfg.method == "lora":
        from zhyper.baselines import LoRABaseline as wrapper
    else:
        from zhyper.model import ZhyperModel as wrapper
    model = meta_model(hf_config, wrap=lambda base: wrapper.from_base(base, cfg.model))
    hf = model.base.get_base_model() if hasattr(model.base, "get_base_model") else model.base
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trained = [p for p in model.parameters() if p.requires_grad]
    units = [sum(p.numel() for p in layer.parameters()) for layer in _decoder_layers(hf)]
    emb = hf.get_input_embeddings().weight.numel()
    head = hf.get_output_embeddings()
    units += [emb, head.weight.numel() if head is not None else 0]
    hypernet = sum(p.numel() for p in model.hypernet.parameters()) if hasattr(model, "hypernet") else 0
    adapted: dict[str, tuple[int, int]] = {}
    if hasattr(model, "layout"):
        for m in model.layout:
            adapted.setdefault(m.module_type, (m.in_features, m.out_features))
    else:  # PEFT: its LoRA layers
        for name, module in hf.named_modules():
            if hasattr(module, "lora_A") and hasattr(module, "in_features") and hasattr(module, "base_layer"):
                adapted.setdefault(name.split(".")[-1], (module.in_features, module.out_features))
    c = hf_config
    heads = c.num_attention_heads
    enc = cfg.model.encoder
    return ModelSizes(
        base_name=cfg.base_model, n_layers=c.num_hidden_layers, hidden=c.hidden_size,
        intermediate=c.intermediate_size, n_heads=heads, n_kv_heads=getattr(c, "num_key_value_heads", None) or heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads, vocab=c.vocab_size,
        tied=bool(getattr(c, "tie_word_embeddings", False)), base_params=sum(p.numel() for p in frozen),
        base_numels=tuple(p.numel() for p in frozen), largest_unit=max(units),
        trained_params=sum(p.numel() for p in trained), trained_numels=tuple(p.numel() for p in trained),
        hypernet_params=hypernet, shared_params=sum(p.numel() for p in trained) - hypernet,
        adapted=tuple((t, i, o) for t, (i, o) in adapted.items()), rank=cfg.model.rank, encoder=enc,
        encoder_params=encoder_params if encoder_params is not None else KNOWN_ENCODER_PARAMS.get(enc))


# ---------------------------------------------------------------------------------------------- activations
def activation_bytes_per_token(sizes: ModelSizes, c: int) -> dict[str, float]:
    """Bytes one decoder layer keeps for backward per token (frozen base, adapters on ``sizes.adapted``).

    A linear layer with a frozen weight keeps nothing for backward (only a trained weight needs its
    input), so what stays is what the non-linear parts and the adapters need (checked against the
    tensors autograd really saves in tests/sizing/test_memory.py)::

        norms     2 · (4h + 4)         each RMSNorm keeps an fp32 copy of its input and 1/rms
        attention c·(2·hq + 2·hkv) + 4a SDPA keeps q (after rotary), k, v, its output; fp32 log-sum-exp per head
        mlp       3 · c·I              SwiGLU keeps the gate (SiLU input), the SiLU output and up
        adapters  c·(input of each adapted linear, once per distinct tensor) + 4·r per adapted module (h = A·x)

    with h the hidden size, hq = heads·head_dim, hkv = kv_heads·head_dim, a the heads, I the MLP width.
    (Korthikanti et al. 2022 count 34·h + 5·a·t bytes per token for a fully trained GPT layer in 16 bit
    with dropout and without flash attention; a frozen Llama block under SDPA keeps much less.)
    """
    h, hq, hkv = sizes.hidden, sizes.n_heads * sizes.head_dim, sizes.n_kv_heads * sizes.head_dim
    # o_proj reads the attention output, which SDPA already keeps (its kernels return a transposed view of a
    # (b, t, heads, d) buffer, so the reshape before o_proj copies nothing): no extra bytes.
    site_width = {"attn_in": h, "attn_out": 0, "mlp_in": h, "mlp_act": sizes.intermediate}
    sites: dict[str, int] = {}
    for mtype, in_features, _ in sizes.adapted:
        site = _INPUT_SITE.get(mtype, mtype)
        sites[site] = site_width.get(site, in_features)
    return {
        "norms": 2 * (4 * h + 4),
        "attention": c * (2 * hq + 2 * hkv) + 4 * sizes.n_heads,
        "mlp": 3 * c * sizes.intermediate,
        "adapters": c * sum(sites.values()) + 4 * sizes.rank * len(sizes.adapted),
    }


def activation_bytes(sizes: ModelSizes, c: int, micro_batch: int, seq: int, checkpointing: bool) -> int:
    """Activations of one micro-batch kept for backward (excluding logits).

    Without checkpointing every layer keeps ``activation_bytes_per_token``; with it each layer keeps
    only its input (``c·h`` per token) and one layer at a time is recomputed in backward.
    """
    tokens = micro_batch * seq
    per_layer = sum(activation_bytes_per_token(sizes, c).values()) * tokens
    final_norm = 4 * sizes.hidden * tokens
    if checkpointing:
        return int(sizes.n_layers * c * sizes.hidden * tokens + per_layer + final_norm)
    return int(sizes.n_layers * per_layer + final_norm)


def logits_bytes(sizes: ModelSizes, c: int, micro_batch: int, seq: int) -> int:
    """The logits in the run's dtype plus three fp32 (b·t, V) buffers at the start of backward."""
    return micro_batch * seq * sizes.vocab * (c + 12)


# ---------------------------------------------------------------------------------------------- the setting
@dataclass(frozen=True)
class Setting:
    """Everything besides the model that decides the memory of a rank."""

    nodes: int
    gpus_per_node: int
    device: str  # "cuda" | "cpu"
    device_memory: int  # bytes per rank
    stage: int
    bf16: bool
    micro_batch: int
    gas: int
    seq: int
    checkpointing: bool
    offload_param: bool = False
    offload_optimizer: bool = False
    reduce_bucket: int = DS_DEFAULTS["reduce_bucket_size"]
    prefetch_bucket: int = DS_DEFAULTS["stage3_prefetch_bucket_size"]
    persistence_threshold: int = DS_DEFAULTS["stage3_param_persistence_threshold"]
    max_live: int = DS_DEFAULTS["stage3_max_live_parameters"]
    max_reuse_distance: int = DS_DEFAULTS["stage3_max_reuse_distance"]
    contiguous_gradients: bool = True
    overlap_comm: bool = False

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def c(self) -> int:
        return 2 if self.bf16 else 4

    def describe(self) -> str:
        offload = [n for n, on in (("parameters", self.offload_param), ("optimizer", self.offload_optimizer)) if on]
        return (f"ZeRO-{self.stage}, {'bf16' if self.bf16 else 'fp32'}"
                + (f", offload {' + '.join(offload)}" if offload else "")
                + f", micro-batch {self.micro_batch} x {self.seq} tokens, gradient accumulation {self.gas}, "
                f"checkpointing {'on' if self.checkpointing else 'off'}")


def _offload(zero: dict, key: str) -> bool:
    dev = (zero.get(key) or {}).get("device", "none")
    return str(dev).lower() in ("cpu", "nvme")


def setting_from(cfg, ds: dict, nodes: int, gpus_per_node: int, device: str, device_memory: int,
                 checkpointing: bool | None = None) -> Setting:
    """The Setting of a run config and a DeepSpeed config resolved by ``resolve_ds_config``."""
    zero = ds.get("zero_optimization", {}) or {}
    stage = int(zero.get("stage", 0))
    if ds.get("fp16", {}).get("enabled"):
        raise ValueError("fp16: this estimate covers fp32 and bf16 runs (the recipe's configs); fp16 is not modelled")

    def num(key):
        v = zero.get(key, DS_DEFAULTS[key])
        if isinstance(v, str) and v == "auto":
            return DS_DEFAULTS[key]  # what DeepSpeed uses when nothing fills it in
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"zero_optimization.{key}: expected a non-negative number, got {v!r}")
        return int(v)

    return Setting(nodes=nodes, gpus_per_node=gpus_per_node, device=device, device_memory=device_memory, stage=stage,
                   bf16=bool(ds.get("bf16", {}).get("enabled")), micro_batch=int(ds["train_micro_batch_size_per_gpu"]),
                   gas=int(ds["gradient_accumulation_steps"]), seq=cfg.data.max_length,
                   checkpointing=cfg.train.gradient_checkpointing if checkpointing is None else checkpointing,
                   offload_param=stage == 3 and _offload(zero, "offload_param"),
                   offload_optimizer=stage >= 1 and _offload(zero, "offload_optimizer"),
                   reduce_bucket=num("reduce_bucket_size"), prefetch_bucket=num("stage3_prefetch_bucket_size"),
                   persistence_threshold=num("stage3_param_persistence_threshold"),
                   max_live=num("stage3_max_live_parameters"), max_reuse_distance=num("stage3_max_reuse_distance"),
                   contiguous_gradients=bool(zero.get("contiguous_gradients", True)),
                   overlap_comm=bool(zero.get("overlap_comm", stage == 3)))


# ---------------------------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class Line:
    name: str
    device: int  # bytes on the device of a rank (host RAM when the device is the CPU)
    host: int  # bytes on the host, per rank (GPU runs only)
    how: str


@dataclass(frozen=True)
class Timing:
    flops_per_token: float
    tokens_per_step: int  # all ranks, upper bound (every sequence at data.max_length)
    compute_s: float
    comm_s: float
    assumed_flops: float
    inter_node: float  # bytes/s assumed between nodes (ZeRO-3 all-gathers)
    intra_node: float  # bytes/s assumed inside a node

    @property
    def step_s(self) -> float:
        return self.compute_s + self.comm_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s


@dataclass(frozen=True)
class Estimate:
    sizes: ModelSizes
    setting: Setting
    lines: tuple[Line, ...]
    activations_off: int
    activations_on: int
    timing: Timing

    @property
    def device_total(self) -> int:
        return sum(line.device for line in self.lines)

    @property
    def host_total(self) -> int:
        return sum(line.host for line in self.lines)

    @property
    def usable(self) -> int:
        if self.setting.device == "cpu":
            return self.setting.device_memory
        return int(self.setting.device_memory * CUDA_USABLE_FRACTION)

    @property
    def fits(self) -> bool:
        return self.device_total <= self.usable

    def line(self, name: str) -> Line:
        for line in self.lines:
            if line.name.startswith(name):
                return line
        raise KeyError(name)


def gathered_elements(sizes: ModelSizes, s: Setting) -> int:
    """Base parameters ZeRO-3 holds gathered at once on a rank.

    At least the largest unit it gathers (a decoder layer, the embedding or the LM head) plus as much
    again prefetched (``stage3_prefetch_bucket_size``). Once the first step has recorded the trace,
    DeepSpeed does not release a parameter it will use again within ``stage3_max_reuse_distance``
    elements, up to ``stage3_max_live_parameters`` (both 1e9 by default): a base smaller than that stays
    gathered whole from the second step on.
    """
    working = sizes.largest_unit + min(s.prefetch_bucket, sizes.largest_unit)
    kept = min(sizes.base_params, s.max_live) if s.max_reuse_distance > 0 else 0
    return min(max(working, kept), sizes.base_params)


def model_state_bytes(sizes: ModelSizes, s: Setting) -> dict[str, int]:
    """Per-rank bytes of the model states (no activations, no runtime), keyed like the plan's lines."""
    n, c, cpu = s.world, s.c, s.device == "cpu"
    out = {}
    if s.stage == 3:
        persistent = sum(k for k in sizes.base_numels if k <= s.persistence_threshold)
        out["base"] = c * ((sizes.base_params - persistent) / n + persistent)
        out["gathered"] = c * gathered_elements(sizes, s) * (GLOO_GATHER_FACTOR if cpu else 1)
        tp = sum(k for k in sizes.trained_numels if k <= s.persistence_threshold)
        out["trained"] = c * ((sizes.trained_params - tp) / n + tp)
    else:
        out["base"] = c * sizes.base_params
        out["gathered"] = 0
        out["trained"] = c * sizes.trained_params
    p = sizes.trained_params
    grads = c * (p / n if s.stage >= 2 else p)
    fp32_grads = 4 * (p / n if s.stage >= 1 else p) if s.bf16 else 0
    bucket = 0
    if s.stage >= 1 and s.contiguous_gradients:
        copies = 2 if s.overlap_comm and s.stage in (1, 2) else 1
        bucket = copies * c * (min(s.reduce_bucket, p) if cpu else s.reduce_bucket)
    out["gradients"] = grads
    out["fp32 gradients"] = fp32_grads
    out["bucket"] = bucket
    share = n if s.stage >= 1 else 1
    master = 4 * p / share if (s.bf16 or s.stage >= 1) else 0
    out["optimizer"] = 8 * p / share + master
    return {k: int(v) for k, v in out.items()}


def _timing(sizes: ModelSizes, s: Setting, flops: float | None, inter_node: float, intra_node: float) -> Timing:
    passes = 2 + (1 if s.checkpointing else 0)  # forward, input-gradient backward, recompute
    hq = sizes.n_heads * sizes.head_dim
    per_token_fwd = 2 * sizes.active_params + 2 * sizes.n_layers * s.seq * hq  # causal attention: t/2 keys on average
    per_token = passes * per_token_fwd
    tokens_rank = s.micro_batch * s.gas * s.seq
    throughput = flops if flops is not None else ASSUMED_FLOPS[s.device]
    compute = tokens_rank * per_token / throughput
    comm = 0.0
    if s.device == "cuda" and s.world > 1:  # ring collectives: each rank moves (N-1)/N of the buffer over the
        link = inter_node if s.nodes > 1 else intra_node  # slowest link of the ring (between nodes, if several)
        ring = (s.world - 1) / s.world / link
        if s.stage == 3:  # the frozen base is all-gathered in every pass, the trained gradients reduce-scattered
            comm = s.gas * (passes * s.c * sizes.base_params + s.c * sizes.trained_params) * ring
        else:  # only the trained gradients are all-reduced (twice the volume of a reduce-scatter)
            comm = s.gas * 2 * s.c * sizes.trained_params * ring
    if s.device == "cuda" and s.offload_param:  # this rank's partition comes from the host in every pass
        comm += s.gas * passes * s.c * sizes.base_params / s.world / ASSUMED_PCIE_BYTES_PER_S
    return Timing(per_token, tokens_rank * s.world, compute, comm, throughput, inter_node, intra_node)


def _working_lines(sizes: ModelSizes, s: Setting, add) -> tuple[int, int]:
    """``add`` the activations, logits, encoder and runtime lines; (activation bytes without, with checkpointing)."""
    c, cpu = s.c, s.device == "cpu"
    heap = CPU_HEAP_FACTOR if cpu else 1.0  # the CPU's RSS also keeps freed intermediates (see CPU_HEAP_FACTOR)
    heap_note = f" x {CPU_HEAP_FACTOR:g} (CPU heap)" if cpu else ""
    act_off = int(heap * activation_bytes(sizes, c, s.micro_batch, s.seq, False))
    act_on = int(heap * activation_bytes(sizes, c, s.micro_batch, s.seq, True))
    add(f"activations (checkpointing {'on' if s.checkpointing else 'off'})", act_on if s.checkpointing else act_off,
        f"{s.micro_batch} x {s.seq} tokens, {sizes.n_layers} layers{heap_note}; "
        f"{'off' if s.checkpointing else 'on'}: {act_off / GIB if s.checkpointing else act_on / GIB:.2f} GiB")
    add("logits + loss", heap * logits_bytes(sizes, c, s.micro_batch, s.seq),
        f"b·t·V x ({c} + 12) B, V = {sizes.vocab:,}{heap_note}")
    if sizes.encoder_params is not None:
        add("sentence encoder (fp32, runs on the CPU)", 4 * sizes.encoder_params,
            f"{sizes.encoder}: {sizes.encoder_params:,} x 4 B", on_host=True)
    else:
        add("sentence encoder (unknown size: not counted)", 0, f"{sizes.encoder}: pass --encoder-params", on_host=True)
    if cpu:
        add("runtime (measured: Python, torch, DeepSpeed, data)", CPU_RUNTIME_BYTES[s.stage],
            "peak RSS of a rank without a model (zhyper.sizing.runtime)")
    else:
        add("runtime (assumed: CUDA context, cuBLAS, NCCL)", CUDA_RUNTIME_BYTES, "not measured (no GPU here)")
    return act_off, act_on


def estimate(sizes: ModelSizes, s: Setting, flops: float | None = None,
             inter_node: float = ASSUMED_INTER_NODE_BYTES_PER_S,
             intra_node: float = ASSUMED_INTRA_NODE_BYTES_PER_S) -> Estimate:
    """The per-rank memory lines and the computed step time of ``sizes`` under ``s``."""
    c, cpu = s.c, s.device == "cpu"
    dt = "bf16" if s.bf16 else "fp32"
    st = model_state_bytes(sizes, s)
    n = s.world
    lines = []

    def add(name, nbytes, how, on_host=False):
        on_host = on_host and not cpu
        lines.append(Line(name, 0 if on_host else int(nbytes), int(nbytes) if on_host else 0, how))

    def persistent(numels):
        kept = sum(k for k in numels if k <= s.persistence_threshold)
        return f" ({kept:,} in tensors <= {s.persistence_threshold:,} stay whole)" if kept else ""

    split = f"/ {n} ranks (ZeRO-3 partitions it)" if s.stage == 3 else f"(replicated: ZeRO-{s.stage})"
    add(f"base parameters (frozen, {dt})", st["base"], f"{sizes.base_params:,} x {c} B {split}"
        + (persistent(sizes.base_numels) if s.stage == 3 else ""), s.offload_param)
    if s.stage == 3:
        add("ZeRO-3 gathered parameters", st["gathered"],
            f"{gathered_elements(sizes, s):,} x {c} B" + (f" x {GLOO_GATHER_FACTOR} (gloo's flat copy)" if cpu else "")
            + f" (largest unit {sizes.largest_unit:,}; max live {s.max_live:,})")
    add(f"trained parameters ({dt})", st["trained"],
        f"{sizes.trained_params:,} x {c} B" + (f" / {n}" + persistent(sizes.trained_numels) if s.stage == 3 else ""))
    add(f"gradients ({dt})", st["gradients"],
        f"{sizes.trained_params:,} x {c} B" + (f" / {n} (stage >= 2)" if s.stage >= 2 else ""))
    if st["fp32 gradients"]:
        add("gradients (fp32 copy, bf16 run)", st["fp32 gradients"],
            f"{sizes.trained_params:,} x 4 B" + (f" / {n}" if s.stage >= 1 else ""),
            s.offload_optimizer)
    if st["bucket"]:
        add("gradient reduce bucket", st["bucket"], f"{s.reduce_bucket:,} elements x {c} B"
            + (" (touched part only on the CPU)" if cpu else "") + (" x 2 (overlap_comm)" if s.overlap_comm
                                                                     and s.stage in (1, 2) else ""))
    master = " + fp32 master" if (s.bf16 or s.stage >= 1) else ""
    add("optimizer (AdamW m, v" + master + ")", st["optimizer"],
        f"{8 + (4 if master else 0)} B x {sizes.trained_params:,}" + (f" / {n}" if s.stage >= 1 else ""),
        s.offload_optimizer)
    act_off, act_on = _working_lines(sizes, s, add)
    return Estimate(sizes, s, tuple(lines), act_off, act_on, _timing(sizes, s, flops, inter_node, intra_node))
