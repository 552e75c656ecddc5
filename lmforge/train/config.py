"""Training options: optimizer, schedule, batch, precision, checkpoints, logging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    optimizer: Literal["adamw", "adam"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # applied to weight matrices only (not norms, biases, embeddings' positions)
    grad_clip: float = 1.0  # global grad-norm clip; 0 = off
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on capable CUDA, else fp32
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    seed: int = 1337
    # Objectives for the non-causal kinds.
    mlm_probability: float = 0.15  # encoder: fraction of tokens masked (BERT: 80% mask, 10% random, 10% kept)
    noise_density: float = 0.15  # encoder-decoder: fraction of tokens in corrupted spans
    mean_span_length: float = 3.0  # encoder-decoder: mean corrupted span length (T5)
    # Periodic work.
    log_every: int = 10
    eval_every: int = 200  # validation loss every N steps (and at the end); 0 = only at the end
    eval_batches: int = 20  # micro-batches of held-out data per validation
    ckpt_every: int = 500  # checkpoint every N steps (and at the end, and on SIGINT/SIGTERM); 0 = end only
    keep_last: int = 2  # checkpoints kept on disk
    max_bad_steps: int = 5  # stop after this many non-finite losses in a row
    init_from: str | None = None  # a checkpoint dir or run dir to start from (weights only)
    resume: bool = True  # continue from the run's latest checkpoint if one exists
