"""parallelize(model, cfg, env) -> Parallel: the model as this rank runs it, applied from outside.

The order follows how the pieces compose (as in torchtitan's parallelize.py): pipeline split
first (a rank keeps only its stage), then tensor parallel on what is left, then activation
checkpointing around each block, then data parallel (FSDP2 shards the already TP-sharded
parameters over dp, making them 2-D; DDP replicates). `Parallel` then runs one micro-batch's
forward and backward the same way whatever the layout, so the training loop does not branch.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import ConfigError
from lmforge.train.optim import no_decay_names
from lmforge.train.parallel import grads as grad_utils
from lmforge.train.parallel.dist import Dist, Layout
from lmforge.train.parallel.pipeline_parallel import ScaledLoss, build_schedule, build_stage, split_layers
from lmforge.train.parallel.recompute import checkpoint_blocks
from lmforge.train.parallel.tensor import apply_tensor_parallel

if TYPE_CHECKING:  # the aggregate sits above train (it gathers train's sections): annotations only
    from lmforge.config import RunConfig


def check_layout(cfg: RunConfig, layout: Layout, seq_len: int) -> None:
    """Raise ConfigError if the model, batch or options cannot be split as `layout` says."""
    m, t, pc = cfg.model, cfg.train, cfg.parallel
    if layout.tp > 1:
        for name, heads in (("model.n_head", m.n_head), ("model.n_kv_head (key/value heads)", m.kv_heads)):
            if heads % layout.tp:
                raise ConfigError(
                    f"parallel.tp={layout.tp} does not divide {name}={heads}; each tensor-parallel "
                    "rank must hold whole heads"
                )
        if m.hidden_dim % layout.tp:
            raise ConfigError(
                f"parallel.tp={layout.tp} does not divide the MLP width {m.hidden_dim} (model.ffn_hidden)"
            )
        if m.vocab_size % layout.tp:
            padded = -(-m.vocab_size // layout.tp) * layout.tp
            raise ConfigError(
                f"parallel.tp={layout.tp} does not divide model.vocab_size={m.vocab_size}; set "
                f"model.vocab_size={padded} (a multiple of {layout.tp}; extra rows are unused padding)"
            )
        if pc.dp_mode == "ddp" and layout.dp > 1:
            raise ConfigError(
                "parallel.dp_mode=ddp cannot be combined with parallel.tp > 1; use dp_mode=fsdp"
            )
        if pc.sequence_parallel and seq_len % layout.tp:
            raise ConfigError(
                f"parallel.sequence_parallel needs the sequence length ({seq_len}) to be a "
                f"multiple of parallel.tp={layout.tp}"
            )
        if t.compile:  # torch 2.13: DTensor's redistribute backward receives a plain tensor from the
            # compiled block ("'Tensor' object has no attribute '_local_tensor'"); FSDP and PP compile fine
            raise ConfigError(
                "train.compile=true is not supported with parallel.tp > 1 yet; set train.compile=false"
            )
        if pc.sequence_parallel and m.kind == "encoder-decoder":
            raise ConfigError(
                "parallel.sequence_parallel supports decoder and encoder models, not encoder-decoder"
            )
    if layout.pp > 1:
        split_layers(m.n_layer, layout.pp)  # raises if pp > n_layer
        if m.kind == "encoder-decoder":
            raise ConfigError(
                "parallel.pp > 1 supports decoder and encoder models; an encoder-decoder's two "
                "stacks do not form one pipeline (use parallel.pp=1)"
            )
        if m.tie_embeddings:
            raise ConfigError(
                "model.tie_embeddings=true puts one weight on the first and the last pipeline "
                "stage; set model.tie_embeddings=false to use parallel.pp > 1"
            )
    if t.batch_size % layout.dp:
        raise ConfigError(
            f"train.batch_size={t.batch_size} (sequences per micro-batch, over all data-parallel "
            f"ranks) is not a multiple of parallel.dp={layout.dp}"
        )
    if layout.pp > 1:
        local, micro = t.batch_size // layout.dp, pipeline_microbatches(pc, layout)
        if local % micro:
            raise ConfigError(
                f"each data-parallel rank's {local} sequences per micro-batch (train.batch_size / dp) "
                f"do not split into parallel.pp_microbatches={micro} pipeline micro-batches"
            )
        if pc.pp_schedule == "1f1b" and micro < layout.pp:
            raise ConfigError(
                f"the 1F1B schedule needs at least as many micro-batches as stages: "
                f"parallel.pp_microbatches={micro} < parallel.pp={layout.pp}"
            )
    if layout.world_size > 1 and t.precision == "fp16":
        raise ConfigError(
            "train.precision=fp16 (loss scaling) is single-process only; use bf16 for distributed runs"
        )


def pipeline_microbatches(pc, layout: Layout) -> int:
    return pc.pp_microbatches or layout.pp


class Parallel:
    """One rank's share of the model and how to run it.

    module:   what this rank holds and optimizes (the model or its pipeline stage), unwrapped
    has_loss: whether this rank computes the loss (every rank, or the last pipeline stage)
    """

    def __init__(
        self,
        module: nn.Module,
        env: Dist,
        runner: nn.Module | None = None,
        schedule=None,
        loss_fn: ScaledLoss | None = None,
        microbatches: int = 1,
        no_decay: set[str] | None = None,
    ) -> None:
        self.module, self.env = module, env
        self.no_decay = no_decay  # parameter names without weight decay (the whole model's choice)
        self.runner = runner if runner is not None else module  # what forward calls (DDP / compiled)
        self.schedule, self.loss_fn, self.microbatches = schedule, loss_fn, microbatches
        self.has_loss = schedule is None or env.pp_rank == env.layout.pp - 1
        self.is_first_stage = schedule is None or env.pp_rank == 0

    def forward_backward(
        self,
        batch: dict[str, torch.Tensor],
        n_micro: int,
        last: bool,
        scaler: torch.amp.GradScaler,
        weight: float | None = None,
        loss_sum=None,
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch, its gradient weighted 1 / n_micro; returns
        its (detached) mean loss on ranks with a loss, else 0. With `weight` (token-weighted
        sources, train/source.py) the loss is instead loss_sum(model, batch) (a sum over the
        batch's loss units) times weight, returned as such."""
        if weight is not None:
            if self.schedule is not None:
                raise ConfigError("token-weighted batches (fine-tuning) do not run with parallel.pp > 1 yet")
            with self._sync_grads(last):
                loss = loss_sum(self.runner, batch) * weight
                scaler.scale(loss).backward()
            return loss.detach()
        if self.schedule is not None:
            self.loss_fn.scale = 1.0 / (self.microbatches * n_micro)
            losses: list[torch.Tensor] = []
            self.schedule.step(
                *self._stage_inputs(batch),
                target=batch["targets"] if self.has_loss else None,
                losses=losses if self.has_loss else None,
            )
            if not self.has_loss:
                return torch.zeros((), device=self.env.device)
            return torch.stack([x.detach().float() for x in losses]).sum() * n_micro
        with self._sync_grads(last):
            _, loss = self.runner(
                batch["input_ids"], batch["targets"], decoder_input_ids=batch.get("decoder_input_ids")
            )
            scaler.scale(loss / n_micro).backward()  # the mean over micro-batches is the full batch's mean
        return loss.detach().float()

    def eval_nll(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Summed loss (fp32) over the batch's targets other than -100, without gradients (None on
        pipeline stages without the loss). A sum, not a mean, so callers can pad a batch with
        ignored rows and still add up exact token totals."""
        targets = batch["targets"]
        if self.schedule is not None:
            self.loss_fn.scale, self.loss_fn.reduction = 1.0, "sum"
            losses: list[torch.Tensor] = []
            try:
                self.schedule.eval(
                    *self._stage_inputs(batch),
                    target=targets if self.has_loss else None,
                    losses=losses if self.has_loss else None,
                )
            finally:
                self.loss_fn.reduction = "mean"
            return torch.stack([x.float() for x in losses]).sum() if self.has_loss else None
        logits, _ = self.runner(
            batch["input_ids"],
            None,
            decoder_input_ids=batch.get("decoder_input_ids"),
            segment_ids=batch.get("segment_ids"),
            position_ids=batch.get("position_ids"),
        )
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )

    def _stage_inputs(self, batch) -> tuple:
        return (batch["input_ids"],) if self.is_first_stage else ()

    @contextlib.contextmanager
    def _sync_grads(self, last: bool):
        """Reduce gradients over dp only after the last micro-batch of gradient accumulation."""
        if isinstance(self.runner, nn.parallel.DistributedDataParallel) and not last:
            with self.runner.no_sync():
                yield
            return
        if hasattr(self.module, "set_requires_gradient_sync"):  # FSDP2
            self.module.set_requires_gradient_sync(last)
        yield

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """The global gradient norm before clipping; gradients are clipped to max_norm if > 0."""
        params = [p for p in self.module.parameters() if p.grad is not None]
        if not self.env.distributed:  # one process: torch's own, as before
            if max_norm > 0:
                return torch.nn.utils.clip_grad_norm_(params, max_norm)
            return grad_utils.total_norm([p.grad for p in params])
        pp_group = self.env.group("pp") if self.env.layout.pp > 1 else None
        norm = grad_utils.global_grad_norm(params, pp_group)
        if max_norm > 0:
            grad_utils.clip_grads_(params, max_norm, norm)
        return norm

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a per-dp-rank value (e.g. the loss) over the data-parallel group, on every
        rank. Ranks without a loss add 0; each dp rank's value is held by its tp ranks."""
        if not self.env.distributed:
            return value
        v = value if self.has_loss else torch.zeros_like(value)
        return self.env.all_reduce_sum(v.clone()) / (self.env.layout.dp * self.env.layout.tp)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)


def parallelize(model: nn.Module, cfg: RunConfig, env: Dist, dtype: torch.dtype) -> Parallel:
    """Apply the layout of `env` to `model` (built the same way on every rank)."""
    pc, layout = cfg.parallel, env.layout
    if not env.distributed:
        checkpoint_blocks(enumerate(model.blocks), pc.activation_checkpoint, pc.ac_every)
        if hasattr(model, "encoder_blocks"):
            checkpoint_blocks(enumerate(model.encoder_blocks), pc.activation_checkpoint, pc.ac_every)
        runner = torch.compile(model) if cfg.train.compile else model
        return Parallel(model, env, runner=runner)

    sp = pc.sequence_parallel and layout.tp > 1
    no_decay = no_decay_names(model, cfg.train.weight_decay)
    module = model
    if layout.pp > 1:
        module = build_stage(model, layout.pp, env.pp_rank, seq_shards=layout.tp if sp else 1)
    blocks = _blocks(module)
    if layout.tp > 1:
        apply_tensor_parallel(module, [b for _, b in blocks], env.submesh("tp"), sp)
    checkpoint_blocks(blocks, pc.activation_checkpoint, pc.ac_every)
    if cfg.train.compile:  # per block: each compiles once and is reused by every layer
        for _, block in blocks:
            block.compile()
    runner = module
    if pc.dp_mode == "fsdp" and layout.dp > 1:
        # A decoder block with cross-attention is not its own FSDP unit: the model computes every
        # block's cross-attention keys/values (block.cross_attn.project_kv) before running the
        # blocks, outside their forward, where FSDP gathers a unit's weights. They stay in the root.
        units = [b for _, b in blocks if not hasattr(b, "cross_attn")]
        _fully_shard(module, units, env.submesh("dp"), dtype, pc.reshard_after_forward)
    elif layout.dp > 1 and layout.pp == 1:
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(
            module, device_ids=device_ids, process_group=env.group("dp")
        )
    elif layout.dp > 1:
        # DDP's reducer cannot follow a pipeline's per-micro-batch backward passes (torch 2.13:
        # "rebuilt parameter indices size is not same"). FSDP2 on the 2-D (dp, tp) mesh is hybrid
        # sharding, replicated over dp and sharded over tp, which is 1 here (ddp refuses tp > 1):
        # plain replication with all-reduced gradients, as DDP, and the pipeline drives it.
        units = [b for _, b in blocks if not hasattr(b, "cross_attn")]
        _fully_shard(module, units, env.submesh("dp", "tp"), dtype, reshard=False)
    if layout.pp == 1:
        return Parallel(module, env, runner=runner, no_decay=no_decay)
    loss_fn = ScaledLoss()
    micro = pipeline_microbatches(pc, layout)
    schedule = build_schedule(
        runner, layout.pp, env.pp_rank, env.device, env.group("pp"), pc.pp_schedule, micro, loss_fn
    )
    return Parallel(
        module, env, runner=runner, schedule=schedule, loss_fn=loss_fn, microbatches=micro, no_decay=no_decay
    )


def _blocks(module: nn.Module) -> list[tuple[int, nn.Module]]:
    """(layer index, block) of every transformer block in `module` (a model or a stage)."""
    blocks = module.blocks
    pairs = (
        [(int(k), b) for k, b in blocks.items()]
        if isinstance(blocks, nn.ModuleDict)
        else list(enumerate(blocks))
    )
    if hasattr(module, "encoder_blocks"):
        pairs += list(enumerate(module.encoder_blocks))
    return pairs


def _fully_shard(
    module: nn.Module, blocks: list[nn.Module], dp_mesh, dtype: torch.dtype, reshard: bool
) -> None:
    """FSDP2 per block (each block's all-gather overlaps the previous block's compute), then the
    rest (embeddings, final norm, output layer) as the root unit. With bf16, parameters are cast
    for compute while reductions and the fp32 master weights stay fp32 (Micikevicius et al. 2018)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = (
        MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        if dtype != torch.float32
        else MixedPrecisionPolicy()
    )
    for block in blocks:
        fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(module, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard)
