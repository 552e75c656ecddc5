"""Training memory per GPU: weights, gradients, optimizer state and activations, under a layout.

Model states per parameter (Rajbhandari et al. 2020, "ZeRO", §3.1), AdamW:
- fp32:  4 (weights) + 4 (gradients) + 8 (Adam m, v)                      = 16 bytes
- bf16 mixed precision: 2 (bf16 weights) + 2 (bf16 gradients) + 12 (fp32 master weights, m, v) = 16
  bytes. (lmforge's own autocast keeps fp32 weights and gradients instead: 4 + 4 + 8, also 16.)
Muon (train.optimizer=muon) keeps one momentum buffer for the weight matrices inside the blocks
instead of Adam's two, 4 bytes less per such parameter; AdamW keeps its 8 for the rest
(embeddings, output layer, norms, biases).

A layout splits them: tensor (tp) and pipeline (pp) parallelism divide all states by tp·pp; ZeRO
stage 1 also divides the optimizer state by dp, stage 2 the gradients too, stage 3 (= FSDP) the
weights too, which are then gathered one layer at a time (two with prefetch) for compute.

Activations are what autograd saves for the backward pass, counted per token and layer from our
transformer's code path (h = n_embd, kv = key/value width, f = MLP hidden width, a = heads):
- each norm keeps its input and its output (the next matmul's input): 2h; PyTorch's composite
  RMSNorm also keeps the normalised input: 3h;
- attention keeps q, k, v (h + 2kv), its output and the o_proj input (a transposed copy): 2h, and
  a log-sum-exp per head; without a fused (flash) kernel, also the softmax probabilities, a·s;
- the MLP keeps 4f (SwiGLU/GeGLU: gate, act(gate), up, product), 2f (GELU/SiLU) or f (ReLU);
- dropout keeps a 1-byte mask per dropped element.
This is the accounting of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", §4) redone for this model; with tensor parallelism we assume their sequence
parallelism, which divides every term by tp. The output layer keeps the fp32 logits and their
log-softmax, and the loss's backward adds both gradients: 4·V fp32 values per token.
Full activation checkpointing keeps only each layer's input (h) and recomputes one layer at a time.
With 1F1B pipelining the first stage holds pp micro-batches of L/pp layers, i.e. all L layers'
worth of one micro-batch (Korthikanti et al. §4.2.3), so pp does not shrink activations.

The total is a sum (weights + gradients + optimizer + activations), slightly pessimistic: most
gradients are produced after most activations are freed. tests/test_plan_memory.py checks it
against the peak resident memory of a real CPU training step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from lmforge.errors import LmforgeError
from lmforge.model.config import ModelConfig

# bytes per parameter: (weights, gradients, optimizer state) — ZeRO §3.1
STATE_BYTES = {"fp32": (4, 4, 8), "bf16": (2, 2, 12)}
MUON_SAVING = 4  # bytes of optimizer state per block matrix parameter: one fp32 buffer instead of two
OPTIMIZERS = ("adamw", "adam", "muon")
ACT_BYTES = {"fp32": 4, "bf16": 2}
HEAD_BYTES = 4  # logits and the loss are computed in fp32 in both precisions
# Share of the GPU's memory a plan may use: the CUDA context, allocator fragmentation and
# communication buffers take the rest (a rule of thumb, not a measurement).
DEFAULT_HEADROOM = 0.9


@dataclass(frozen=True)
class Layout:
    """How the GPUs are split: dp x tp x pp GPUs, ZeRO stage 0-3 over dp (3 is FSDP)."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    zero: int = 0

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp

    def describe(self) -> str:
        shard = {0: "DDP", 1: "ZeRO-1", 2: "ZeRO-2", 3: "FSDP (ZeRO-3)"}[self.zero]
        return (
            f"dp={self.dp} x tp={self.tp} x pp={self.pp} "
            f"({self.gpus} GPU{'s' if self.gpus > 1 else ''}), {shard}"
        )

    def check(self, model: ModelConfig) -> None:
        for k in ("dp", "tp", "pp"):
            if getattr(self, k) < 1:
                raise LmforgeError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.zero not in (0, 1, 2, 3):
            raise LmforgeError(f"ZeRO stage must be 0, 1, 2 or 3 (3 = FSDP), got {self.zero}")
        if model.n_head % self.tp or model.kv_heads % self.tp:
            raise LmforgeError(
                f"tp={self.tp} must divide the {model.n_head} query and {model.kv_heads} key/value heads"
            )
        if model.n_layer % self.pp:
            raise LmforgeError(f"pp={self.pp} must divide the {model.n_layer} layers")


def activation_elements(model: ModelConfig, seq_len: int, flash: bool = True) -> dict[str, float]:
    """Saved activation values per token (fp32 bytes for 'head', activation dtype for the rest),
    for one layer ('layer', 'cross_layer') and for the ends of the model ('ends', 'head')."""
    h, f, a = model.n_embd, model.hidden_dim, model.n_head
    kv = model.kv_heads * model.head_dim
    norm = 3 * h if model.norm == "rmsnorm" else 2 * h
    attn = (h + 2 * kv) + 2 * h + a  # q, k, v; SDPA output and o_proj input; log-sum-exp
    if (
        not flash or model.attn_dropout > 0 or model.pos == "alibi"
    ):  # unfused attention keeps the probabilities
        attn += a * seq_len * (1 + (1.25 if model.attn_dropout > 0 else 0))  # + dropped probs and mask
    if model.qk_norm:  # the norm keeps q and k (and RMSNorm its normalised copy: it is not one fused kernel)
        attn += (2 if model.norm == "rmsnorm" else 1) * (h + kv)
        if model.pos != "rope":  # SDPA keeps the normalised q, k; without RoPE those are new tensors too
            attn += h + kv
    mlp = model.act.saved_per_hidden * f
    masks = 2 * h * 0.25 if model.resid_dropout > 0 else 0.0  # two 1-byte masks, in 4-byte units
    layer = 2 * norm + attn + mlp + masks
    cross = (
        norm + 3 * h + a + 2 * kv + (h * 0.25 if model.resid_dropout > 0 else 0.0)
    )  # q, out x2, memory k/v
    if model.qk_norm:  # norms of the cross-attention query and memory keys (no RoPE there), as above
        cross += (3 if model.norm == "rmsnorm" else 2) * h + (3 if model.norm == "rmsnorm" else 2) * kv
    ends = norm + (h * 0.25 if model.embd_dropout > 0 else 0.0)  # final norm, embedding dropout mask
    head = (4.0 + (model.logit_softcap is not None)) * model.vocab_size  # soft-capping keeps tanh's output
    return {"layer": layer, "cross_layer": cross, "ends": ends, "head": head}


def block_matrix_params(model: ModelConfig) -> int:
    """Parameters of the weight matrices inside the blocks (what Muon optimizes): attention's q, k, v,
    o (and cross-attention's) and the MLP's; not norms, biases, embeddings or the output layer."""
    C, kv = model.n_embd, model.kv_heads * model.head_dim
    attn = 2 * C * C + 2 * C * kv
    block = attn + ((3 if model.is_glu else 2) * C * model.hidden_dim)
    if model.kind == "encoder-decoder":
        return model.encoder_layers * block + model.n_layer * (block + attn)
    return model.n_layer * block


def training_memory(
    model: ModelConfig,
    seq_len: int | None = None,
    micro_batch: int = 1,
    layout: Layout = Layout(),
    precision: str = "bf16",
    checkpointing: bool = False,
    flash: bool = True,
    optimizer: str = "adamw",
) -> dict:
    """Bytes per GPU of the busiest GPU:
    {'weights', 'gradients', 'optimizer', 'activations', 'total', ...}."""
    if precision not in STATE_BYTES:
        raise LmforgeError(f"precision must be one of {', '.join(STATE_BYTES)}, got {precision!r}")
    if optimizer not in OPTIMIZERS:
        raise LmforgeError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    seq_len = seq_len or model.block_size
    for name, v in (("seq_len", seq_len), ("micro_batch", micro_batch)):
        if not isinstance(v, int) or v < 1:
            raise LmforgeError(f"{name} must be a positive integer, got {v!r}")
    layout.check(model)
    tp, pp, dp, z = layout.tp, layout.pp, layout.dp, layout.zero
    w_b, g_b, o_b = STATE_BYTES[precision]
    n = model.num_params() / (tp * pp)  # parameters held by one model-parallel rank
    weights = n * w_b / (dp if z >= 3 else 1)
    grads = n * g_b / (dp if z >= 2 else 1)
    muon = block_matrix_params(model) / (tp * pp) if optimizer == "muon" else 0.0
    optimizer_bytes = (n * o_b - muon * MUON_SAVING) / (dp if z >= 1 else 1)
    gathered = 0.0
    if z >= 3 and dp > 1:  # FSDP all-gathers a layer (two, with prefetch) and its full gradient
        per_layer = model.param_breakdown()["blocks"] / model.n_layer / tp
        gathered = per_layer * (2 * w_b + g_b)

    e = activation_elements(model, seq_len, flash)
    act_b = ACT_BYTES[precision]
    tokens = micro_batch * seq_len
    layers = model.n_layer
    per_layer = e["layer"] + (e["cross_layer"] if model.kind == "encoder-decoder" else 0.0)
    enc_layers = model.encoder_layers if model.kind == "encoder-decoder" else 0  # source as long as target
    if checkpointing:  # keep each layer's input; recompute one layer at a time in the backward pass
        body = (layers + enc_layers) * model.n_embd + max(per_layer, e["layer"])
    else:
        body = layers * per_layer + enc_layers * e["layer"]
    first_stage = body * tokens * act_b / tp  # 1F1B: pp micro-batches x L/pp layers = L layers' worth
    last_stage = (body / pp + e["ends"]) * tokens * act_b / tp + e["head"] * tokens * HEAD_BYTES / tp
    activations = max(first_stage, last_stage)
    total = weights + grads + optimizer_bytes + gathered + activations
    return {
        "weights": weights,
        "gradients": grads,
        "optimizer": optimizer_bytes,
        "fsdp_gathered": gathered,
        "activations": activations,
        "total": total,
        "layout": asdict(layout),
        "precision": precision,
        "micro_batch": micro_batch,
        "seq_len": seq_len,
        "checkpointing": checkpointing,
        "optimizer_kind": optimizer,
    }


def candidate_layouts(model: ModelConfig, gpus: int) -> list[Layout]:
    """Every layout of exactly `gpus` GPUs, simplest first: least model parallelism (tp·pp), then the
    lowest ZeRO stage, then tensor before pipeline parallelism (tp stays within an 8-GPU node;
    Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters")."""
    out = []
    for tp in (1, 2, 4, 8):
        if model.n_head % tp or model.kv_heads % tp or gpus % tp:
            continue
        for pp in range(1, model.n_layer + 1):
            if model.n_layer % pp or gpus % (tp * pp):
                continue
            dp = gpus // (tp * pp)
            for zero in (0, 1, 2, 3) if dp > 1 else (0,):
                out.append(Layout(dp, tp, pp, zero))
    return sorted(out, key=lambda lay: (lay.tp * lay.pp, lay.zero, lay.pp))


def smallest_layout(
    model: ModelConfig,
    memory_gb: float,
    seq_len: int | None = None,
    micro_batch: int = 1,
    precision: str = "bf16",
    checkpointing: bool = False,
    num_gpus: int | None = None,
    headroom: float = DEFAULT_HEADROOM,
    max_gpus: int = 1 << 17,
    optimizer: str = "adamw",
) -> tuple[Layout, dict]:
    """The simplest layout that fits in `memory_gb` per GPU: on exactly `num_gpus` GPUs if given,
    else on the fewest GPUs (powers of two). LmforgeError if none fits."""
    budget = memory_gb * 1e9 * headroom
    counts = [num_gpus] if num_gpus else [1 << i for i in range(max_gpus.bit_length())]
    for gpus in counts:
        for layout in candidate_layouts(model, gpus):
            mem = training_memory(
                model, seq_len, micro_batch, layout, precision, checkpointing, optimizer=optimizer
            )
            if mem["total"] <= budget:
                return layout, mem
    where = f"on {num_gpus} GPUs" if num_gpus else f"on up to {max_gpus} GPUs"
    hint = "" if checkpointing else "; try activation checkpointing (--checkpointing)"
    raise LmforgeError(
        f"no data/tensor/pipeline/FSDP layout fits this model in {memory_gb:g} GB per GPU "
        f"{where} at micro-batch {micro_batch} x {seq_len or model.block_size} tokens{hint}"
    )


# ---- measuring a real CPU training step ------------------------------------------------------


def measure_cpu_peak(
    model: ModelConfig,
    seq_len: int,
    micro_batch: int,
    steps: int = 2,
    timeout: float = 300,
    optimizer: str = "adamw",
) -> dict:
    """Peak memory of real fp32 training steps of `model` on this CPU, in a fresh process.

    The child builds the model, lmforge's AdamW and a batch, notes its resident memory (VmRSS),
    resets the kernel's peak-RSS mark (writing 5 to /proc/self/clear_refs, Linux >= 4.0), runs
    `steps` training steps (forward, backward, optimizer step, zero_grad) and reads the peak back
    (VmHWM). glibc is told to serve every allocation over 64 KiB by mmap and to hand it back on
    free (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so the resident set follows the live
    tensors instead of a cache of freed heap. Other processes cannot disturb the number; what it
    includes beyond tensors (thread stacks, kernel scratch) is a few MB.

    Returns {'peak_bytes': peak - baseline (gradients + optimizer state + activations + scratch),
    'baseline_bytes', 'params_bytes'}. LmforgeError where /proc/self/clear_refs is unavailable.
    """
    spec = {
        "model": asdict(model),
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "steps": steps,
        "optimizer": optimizer,
    }
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge.plan.memprobe", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise LmforgeError(f"memory probe failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
