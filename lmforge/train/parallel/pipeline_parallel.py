"""Pipeline parallelism: the layer stack cut into `pp` stages, one per pipeline rank, run by
torch.distributed.pipelining's schedules over micro-batches.

GPipe (Huang et al. 2019) runs every micro-batch's forward, then every backward: simple, but
each stage holds all micro-batches' activations. 1F1B (PipeDream-Flush; Narayanan et al. 2021)
alternates one forward and one backward once the pipeline is full, so a stage holds at most pp
micro-batches' activations; the idle "bubble" is (pp - 1) / (m + pp - 1) of the step for m
micro-batches in both.

A stage is built from the whole model: it keeps its blocks (under their original names,
blocks.<i>, so checkpoints are the same in every layout), the first stage also the embeddings,
the last also the final norm and the output layer. Tied embeddings would put one weight on two
stages; that layout is refused rather than kept in sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import ConfigError
from lmforge.model.positions import Positions
from lmforge.model.transformer import soft_cap

IGNORE = -100


def split_layers(n_layer: int, pp: int) -> list[range]:
    """Consecutive block ranges, one per stage, sizes differing by at most one (earlier stages
    get the extra block; the last stage also carries the output layer)."""
    if pp > n_layer:
        raise ConfigError(f"parallel.pp={pp} stages but the model has only model.n_layer={n_layer} blocks")
    base, extra = divmod(n_layer, pp)
    sizes = [base + (1 if s < extra else 0) for s in range(pp)]
    starts = [sum(sizes[:s]) for s in range(pp)]
    return [range(a, a + n) for a, n in zip(starts, sizes)]


class StageModule(nn.Module):
    """The part of a decoder or encoder Transformer that one pipeline stage runs.

    first stage: ids (B, T) -> hidden (B, T, C); middle: hidden -> hidden; last: hidden -> logits
    (B, T, V). With sequence parallelism the hidden states between stages are (B, T/tp, C)."""

    def __init__(self, model: nn.Module, layers: range, first: bool, last: bool, seq_shards: int = 1) -> None:
        super().__init__()
        self.causal = model.cfg.kind == "decoder"
        self.seq_shards = seq_shards  # T = local hidden length * seq_shards (sequence parallelism)
        self.tok_emb = model.tok_emb if first else None
        self.emb_drop = model.emb_drop if first else None
        # Later stages need the position scheme's rotary tables / ALiBi biases (buffers), but not a
        # learned table (a parameter used only at the input).
        keep_pos = first or not any(True for _ in model.pos_emb.parameters())
        self.pos_emb = model.pos_emb if keep_pos else Positions()
        self.blocks = nn.ModuleDict({str(i): model.blocks[i] for i in layers})  # names stay blocks.<i>
        self.norm_f = model.norm_f if last else None
        self.lm_head = model.lm_head if last else None
        self.logit_softcap = model.cfg.logit_softcap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tok_emb is not None:
            T = x.shape[1]
            x = self.emb_drop(self.pos_emb.add(self.tok_emb(x), 0))  # (B, T) -> (B, T, C)
        else:
            T = x.shape[1] * self.seq_shards
        rope = self.pos_emb.rotary(0, T)
        mask = self.pos_emb.bias(0, T, self.causal)  # ALiBi (with the causal -inf) or None
        is_causal = self.causal and mask is None
        for block in self.blocks.values():
            x = block(x, rope, mask, is_causal, None, None)  # (B, T, C)
        if self.lm_head is not None:
            x = soft_cap(self.lm_head(self.norm_f(x)), self.logit_softcap)  # (B, T, V), as Transformer.logits
        return x


def build_stage(model: nn.Module, pp: int, pp_rank: int, seq_shards: int) -> StageModule:
    layers = split_layers(model.cfg.n_layer, pp)[pp_rank]
    return StageModule(model, layers, first=pp_rank == 0, last=pp_rank == pp - 1, seq_shards=seq_shards)


class ScaledLoss:
    """The pipeline's loss_fn: mean cross-entropy of one pipeline micro-batch, times `scale`.

    Gradients from every micro-batch add up; with scale = 1 / (pipeline micro-batches x gradient
    accumulation steps) their sum is the gradient of the step's mean loss, as in one process."""

    def __init__(self) -> None:
        self.scale = 1.0
        self.reduction = "mean"  # "sum" while validating: summed NLL, so padded micro-batches add 0

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=IGNORE,
            reduction=self.reduction,
        )
        return loss * self.scale


def build_schedule(
    stage_module: nn.Module,
    pp: int,
    pp_rank: int,
    device: torch.device,
    group,
    schedule: str,
    microbatches: int,
    loss_fn: ScaledLoss,
):
    """A PipelineStage for this rank and the GPipe or 1F1B schedule that drives it."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    stage = PipelineStage(stage_module, pp_rank, pp, device, group=group)
    cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule]
    # scale_grads=False: ScaledLoss already scales; torch's own 1/microbatches would also apply to
    # the gradients accumulated by earlier steps of gradient accumulation.
    return cls(stage, n_microbatches=microbatches, loss_fn=loss_fn, scale_grads=False)
