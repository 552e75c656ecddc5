"""The optimizer: AdamW (or Adam) with weight decay on weight matrices only, or Muon for the
hidden matrices with AdamW for the rest.

Decoupled weight decay (Loshchilov & Hutter 2019) is applied to the 2-D matmul weights; norms'
gains and biases are not decayed (decaying them only pulls activations toward zero; GPT-2/3,
nanoGPT and Llama all exempt them). The model says which tensors decay through
`model.param_groups(weight_decay)` when it has that method (it also knows that e.g. a learned
position table is not a matmul weight); any other module falls back to "2-D or more decays".

train.optimizer=muon (Jordan et al. 2024; lmforge/train/muon.py) takes the Linear weights inside
the transformer blocks (attention and MLP projections), as modded-nanoGPT and nanochat do; the
embeddings, the output layer, norms and biases stay with AdamW, which Muon's orthogonalised step
does not suit (a lookup table's rows are not a linear map's directions). The two optimizers step
as one object (`MuonAdamW`), and the LR schedule scales both, keeping muon_lr / lr.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.train.config import TrainConfig
from lmforge.train.muon import Muon
from lmforge.typed_config import read_yaml_mapping


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: {"params": decayed, "weight_decay": wd} and {"params": rest, "weight_decay": 0}.

    Only parameters with requires_grad are included; tied parameters appear once.
    """
    if hasattr(model, "param_groups"):
        groups = model.param_groups(weight_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    return [g for g in groups if g["params"]]


def no_decay_names(model: nn.Module, weight_decay: float) -> set[str]:
    """Names of the parameters `param_groups` exempts from weight decay. A part of the model (a
    pipeline stage, a sharded copy) keeps the whole model's names, so this decides for it too."""
    exempt = {
        id(p) for g in param_groups(model, weight_decay) if g["weight_decay"] == 0.0 for p in g["params"]
    }
    return {name for name, p in model.named_parameters() if id(p) in exempt}


def is_hidden_matrix(model: nn.Module, name: str, p: torch.Tensor) -> bool:
    """The weight of a Linear layer inside a transformer block: what Muon optimizes. Lookup
    tables stay with AdamW wherever they sit, and so do LoRA's low-rank factors (lora_A/lora_B
    are not a Linear's weight): orthogonalising a rank-r factor's update would give all r
    directions equal steps, which is not what the adapters were tuned with."""
    owner, _, leaf = name.rpartition(".")
    return (
        leaf == "weight"
        and p.dim() == 2
        and _BLOCK.match(name) is not None
        and isinstance(model.get_submodule(owner), nn.Linear)
    )


_BLOCK = re.compile(r"(encoder_)?blocks\.\d+\.")


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, device: torch.device, no_decay: set[str] | None = None
) -> torch.optim.Optimizer | MuonAdamW:
    """AdamW/Adam over the model's parameter groups (fused kernels on CUDA: one launch per step),
    or MuonAdamW for train.optimizer=muon. With `no_decay` (names, from no_decay_names of the
    whole model), the groups follow it instead."""
    if no_decay is None:
        groups = param_groups(model, cfg.weight_decay)
    else:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if n not in no_decay], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    if cfg.optimizer != "muon":
        return _adam(groups, cfg, device)
    hidden = [p for n, p in model.named_parameters() if p.requires_grad and is_hidden_matrix(model, n, p)]
    ids = {id(p) for p in hidden}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in groups]
    rest = [g for g in rest if g["params"]]
    muon = (
        Muon(
            hidden,
            lr=cfg.muon_lr,
            momentum=cfg.muon_momentum,
            weight_decay=cfg.muon_weight_decay,
            nesterov=True,
            adjust_lr_fn=cfg.muon_adjust_lr,
            ns_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        )
        if hidden
        else None
    )
    return MuonAdamW(muon, _adam(rest, cfg, device) if rest else None, lr=cfg.lr, muon_lr=cfg.muon_lr)


def _adam(groups: list[dict], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    if device.type == "cuda":
        kwargs["fused"] = True
    if cfg.optimizer == "adam":  # weight decay here is an L2 term in the gradient (torch's Adam)
        return torch.optim.Adam(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


class MuonAdamW:
    """Muon for the hidden matrices and AdamW for the rest, used as one optimizer: step,
    zero_grad, param_groups (both's, for the grad scaler), state_dict/load_state_dict (one dict
    with a "muon" and an "adamw" part) and set_lr. Iterating it yields the torch optimizers, the
    form in which torch.distributed.checkpoint's get/set_optimizer_state_dict take several, so
    sharded checkpoints hold both states under parameter names (`state.<name>.momentum_buffer`
    beside `state.<name>.exp_avg`). Either part is None when it has no parameters (e.g. LoRA
    fine-tuning, whose only trainable tensors are adapters)."""

    def __init__(
        self, muon: Muon | None, adamw: torch.optim.Optimizer | None, lr: float, muon_lr: float
    ) -> None:
        self.parts = {name: opt for name, opt in (("muon", muon), ("adamw", adamw)) if opt is not None}
        self.muon_ratio = muon_lr / lr  # the schedule scales both peaks alike (lr > 0: TrainConfig.validate)

    def __iter__(self):
        return iter(self.parts.values())

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.parts.values() for g in opt.param_groups]

    def set_lr(self, lr: float) -> None:
        """`lr` for AdamW (the scheduled value of train.lr); lr * muon_lr / train.lr for Muon."""
        for name, opt in self.parts.items():
            for group in opt.param_groups:
                group["lr"] = lr * self.muon_ratio if name == "muon" else lr

    def step(self, closure=None) -> None:
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        for opt in self.parts.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, dict]:
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        if set(state) != set(self.parts):
            what = "AdamW/Adam" if "param_groups" in state else "+".join(sorted(state)) or "nothing"
            raise LmforgeError(
                f"the saved optimizer state is {what}'s, not Muon+AdamW's ({'+'.join(self.parts)}); "
                "train.optimizer must stay as it was when resuming (train.init_from takes the "
                "weights alone)"
            )
        for name, opt in self.parts.items():
            opt.load_state_dict(state[name])


def check_resumable(ckpt_dir: Path, cfg: TrainConfig) -> None:
    """A checkpoint holds Muon+AdamW's state or Adam(W)'s (the two share a format); resuming it
    needs the same kind, else one error that says so before any state is read."""
    saved = (read_yaml_mapping(Path(ckpt_dir) / "config.yaml").get("train") or {}).get("optimizer", "adamw")
    if (saved == "muon") != (cfg.optimizer == "muon"):
        raise LmforgeError(
            f"checkpoint {ckpt_dir} holds the optimizer state of train.optimizer={saved} (this run: "
            f"{cfg.optimizer}); resume with train.optimizer={saved}, or start a new run with "
            "train.init_from (weights only)"
        )


def set_lr(optimizer: torch.optim.Optimizer | MuonAdamW, lr: float) -> None:
    if isinstance(optimizer, MuonAdamW):
        optimizer.set_lr(lr)
        return
    for group in optimizer.param_groups:
        group["lr"] = lr
