"""Training options: optimizer, schedule, batch, precision, checkpoints, logging."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lmforge.errors import ConfigError


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (at the target batch size)
    seq_len: int | None = None  # tokens per sequence; None = model.block_size
    # Batch-size ramp (GPT-3, Brown et al. 2020 §B): tokens per step grow linearly from
    # batch_ramp_start tokens to the full batch over the first batch_ramp_tokens tokens. 0 = off.
    batch_ramp_start: int = 0
    batch_ramp_tokens: int = 0
    lr: float = 3e-4  # peak learning rate
    warmup_steps: int = 100  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio (Chinchilla: 10x decay)
    # cosine/linear: decay from the end of warmup to the last step; wsd (warmup-stable-decay):
    # hold the peak, then decay over the last decay_fraction of the steps (train/schedule.py).
    decay: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    decay_fraction: float = 0.2  # wsd: the share of max_steps spent decaying (MiniCPM: ~10-20%)
    decay_shape: Literal["linear", "1-sqrt"] = (
        "1-sqrt"  # wsd cooldown; 1-sqrt beat linear in Hägele et al. 2024
    )
    # adamw | adam: every parameter; muon: Muon for the 2-D weights inside the blocks, AdamW (lr,
    # betas, weight_decay) for embeddings, output layer, norms and biases (train/optim.py).
    optimizer: Literal["adamw", "adam", "muon"] = "adamw"
    # Muon's peak lr; the schedule scales it as it scales lr. With muon_adjust_lr=original it is
    # Jordan's scale (the step is muon_lr * sqrt(max(1, rows/cols)); ~0.02, as nanochat), with
    # match_rms_adamw Moonshot's (muon_lr * 0.2 * sqrt(max(rows, cols)); about AdamW's lr).
    muon_lr: float = 0.02
    muon_momentum: float = 0.95  # Nesterov momentum (Jordan et al. 2024)
    muon_weight_decay: float = 0.0  # decoupled: weights shrink by muon_lr * this per step
    muon_adjust_lr: Literal["original", "match_rms_adamw"] = "original"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # on 2-D weights (matrices, embedding tables) only, not on norms or biases
    grad_clip: float = 1.0  # global grad-norm clip; 0 = off
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on capable CUDA, else fp32
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    seed: int = 1337
    threads: int = 0  # torch intra-op CPU threads; 0 = torch's default
    # Objectives for the non-causal kinds.
    mlm_probability: float = 0.15  # encoder: fraction of tokens masked (BERT: 80% mask, 10% random, 10% kept)
    noise_density: float = 0.15  # encoder-decoder: fraction of tokens in corrupted spans
    mean_span_length: float = 3.0  # encoder-decoder: mean corrupted span length (T5)
    # encoder-decoder: "t5" = span corruption (source keeps one mask token per span, target lists the
    # spans; Raffel et al. 2020 §3.1.4), "bart" = text infilling (same source, target is the whole
    # original text; Lewis et al. 2020 §2.2).
    denoising: Literal["t5", "bart"] = "t5"
    # Periodic work.
    log_every: int = 10  # a metrics.jsonl line and a progress line every N steps
    progress: Literal["auto", "bar", "lines"] = (
        "auto"  # auto: a tqdm bar on a terminal, plain lines otherwise
    )
    tensorboard: bool = True  # also write TensorBoard events to <run>/tb when `tensorboard` is installed
    eval_every: int = 200  # validation loss every N steps (and at the end); 0 = only at the end
    # Held-out target tokens per validation, rounded up to whole windows (the whole validation split
    # when smaller; 0 = no validation). A token budget, not a batch count, so the held-out set is the
    # same whatever batch_size, grad_accum or parallel layout.
    eval_tokens: int = 131072
    ckpt_every: int = 500  # checkpoint every N steps (and at the end, and on SIGINT/SIGTERM); 0 = end only
    keep_last: int = 2  # checkpoints kept on disk
    max_bad_steps: int = 5  # stop after this many non-finite losses in a row
    init_from: str | None = (
        None  # a checkpoint or run dir to take the weights from (fresh optimizer and step 0);
    )
    # ignored when this run resumes from its own checkpoint
    resume: bool = True  # continue from the run's latest checkpoint if one exists
    # A newest checkpoint whose files no longer match their checksums: "previous" reports it, sets it
    # aside (checkpoints/damaged_step_N) and resumes from the newest intact one; "error" stops.
    on_damaged_checkpoint: Literal["previous", "error"] = "previous"

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        checks = [
            (self.max_steps > 0, f"train.max_steps must be positive, got {self.max_steps}"),
            (self.batch_size > 0, f"train.batch_size must be positive, got {self.batch_size}"),
            (self.grad_accum > 0, f"train.grad_accum must be positive, got {self.grad_accum}"),
            (self.seq_len is None or self.seq_len > 0, f"train.seq_len must be positive, got {self.seq_len}"),
            (
                self.batch_ramp_start >= 0 and self.batch_ramp_tokens >= 0,
                "train.batch_ramp_start and train.batch_ramp_tokens must be >= 0",
            ),
            (
                self.lr >= 0 and math.isfinite(self.lr),
                f"train.lr must be a finite number >= 0, got {self.lr}",
            ),
            (self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}"),
            (
                0.0 <= self.min_lr_ratio <= 1.0,
                f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}",
            ),
            (
                0.0 < self.decay_fraction <= 1.0,
                f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}",
            ),
            (
                self.decay in ("cosine", "linear", "constant", "wsd"),
                f"train.decay={self.decay!r} is not one of cosine, linear, constant, wsd",
            ),
            (
                self.decay_shape in ("linear", "1-sqrt"),
                f"train.decay_shape={self.decay_shape!r} is not one of linear, 1-sqrt",
            ),
            (
                self.optimizer in ("adamw", "adam", "muon"),
                f"train.optimizer={self.optimizer!r} is not one of adamw, adam, muon",
            ),
            (all(0.0 <= b < 1.0 for b in self.betas), f"train.betas must be in [0, 1), got {self.betas}"),
            (self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (
                0.0 < self.mlm_probability < 1.0,
                f"train.mlm_probability must be in (0, 1), got {self.mlm_probability}",
            ),
            (
                0.0 < self.noise_density < 1.0,
                f"train.noise_density must be in (0, 1), got {self.noise_density}",
            ),
            (
                self.mean_span_length >= 1.0,
                f"train.mean_span_length must be >= 1, got {self.mean_span_length}",
            ),
            (self.threads >= 0, f"train.threads must be >= 0, got {self.threads}"),
            (self.log_every > 0, f"train.log_every must be positive, got {self.log_every}"),
            (
                self.eval_every >= 0 and self.ckpt_every >= 0,
                "train.eval_every and train.ckpt_every must be >= 0",
            ),
            (self.eval_tokens >= 0, f"train.eval_tokens must be >= 0, got {self.eval_tokens}"),
            (self.keep_last >= 1, f"train.keep_last must be at least 1, got {self.keep_last}"),
            (self.max_bad_steps >= 1, f"train.max_bad_steps must be at least 1, got {self.max_bad_steps}"),
            (
                self.on_damaged_checkpoint in ("previous", "error"),
                f"train.on_damaged_checkpoint must be previous or error, got {self.on_damaged_checkpoint!r}",
            ),
        ]
        if self.optimizer == "muon":
            checks += [
                (
                    self.lr > 0,
                    (
                        f"train.optimizer=muon needs train.lr > 0 (AdamW's part; the schedule scales "
                        f"muon_lr by lr's ratio), got {self.lr}"
                    ),
                ),
                (
                    self.muon_lr > 0 and math.isfinite(self.muon_lr),
                    f"train.muon_lr must be a finite number > 0, got {self.muon_lr}",
                ),
                (
                    0.0 <= self.muon_momentum < 1.0,
                    f"train.muon_momentum must be in [0, 1), got {self.muon_momentum}",
                ),
                (
                    self.muon_weight_decay >= 0 and math.isfinite(self.muon_weight_decay),
                    f"train.muon_weight_decay must be a finite number >= 0, got {self.muon_weight_decay}",
                ),
                (
                    self.muon_adjust_lr in ("original", "match_rms_adamw"),
                    f"train.muon_adjust_lr={self.muon_adjust_lr!r} is not one of original, match_rms_adamw",
                ),
            ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass
class ParallelConfig:
    """How one run spreads over the processes torchrun starts: a (pp, dp, tp) device mesh.

    The layout never changes the math: train.batch_size is the micro-batch of the whole data-parallel
    group (each dp rank takes batch_size / dp of its sequences), so a recipe trains the same model,
    step for step, on one process or on many (up to float rounding).
    """

    dp: int = -1  # data-parallel degree; -1 = whatever is left: world_size / (tp * pp)
    tp: int = 1  # tensor parallel: attention heads, MLP columns and the vocabulary split over tp ranks
    pp: int = 1  # pipeline parallel: the layer stack cut into pp consecutive stages
    dp_mode: Literal["fsdp", "ddp"] = "fsdp"  # FSDP2 (params, grads, optimizer state sharded) or DDP
    # fsdp: free the gathered parameters after forward and gather again for backward (ZeRO-3);
    # false keeps them until backward (ZeRO-2-like: one all-gather less per step, more memory).
    reshard_after_forward: bool = True
    # tp: norms and dropout work on sequence shards instead of replicated activations
    # (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models").
    sequence_parallel: bool = False
    pp_schedule: Literal["gpipe", "1f1b"] = (
        "1f1b"  # GPipe (Huang et al. 2019) or 1F1B (Narayanan et al. 2021)
    )
    pp_microbatches: int = 0  # pipeline micro-batches per dp micro-batch; 0 = pp (the fewest that fill it)
    # Recompute activations in backward instead of keeping them: none, every block (full), or every
    # ac_every-th block (selective; blocks 0, k, 2k, ...). Also applies to a single process.
    activation_checkpoint: Literal["none", "full", "selective"] = "none"
    ac_every: int = 2
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on CPU
    timeout_s: float = 600.0  # a collective waiting longer than this fails the run instead of hanging

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible value (the mesh is checked against the
        world size and the model when training starts)."""
        checks = [
            (self.dp == -1 or self.dp >= 1, f"parallel.dp must be >= 1 (or -1 = the rest), got {self.dp}"),
            (self.tp >= 1, f"parallel.tp must be >= 1, got {self.tp}"),
            (self.pp >= 1, f"parallel.pp must be >= 1, got {self.pp}"),
            (self.pp_microbatches >= 0, f"parallel.pp_microbatches must be >= 0, got {self.pp_microbatches}"),
            (self.ac_every >= 1, f"parallel.ac_every must be >= 1, got {self.ac_every}"),
            (self.timeout_s > 0, f"parallel.timeout_s must be positive, got {self.timeout_s}"),
        ]
        for name, allowed in {
            "dp_mode": ("fsdp", "ddp"),
            "pp_schedule": ("gpipe", "1f1b"),
            "activation_checkpoint": ("none", "full", "selective"),
            "backend": ("auto", "gloo", "nccl"),
        }.items():
            value = getattr(self, name)
            checks.append((value in allowed, f"parallel.{name}={value!r} is not one of {', '.join(allowed)}"))
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
