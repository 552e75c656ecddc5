"""The lmforge transformer: one family, three shapes, every choice a ModelConfig field.

Choices and the papers behind them:
- kind: decoder-only causal LM (Radford et al. 2019, GPT-2); encoder-only masked LM with
  bidirectional attention (Devlin et al. 2019, BERT); encoder-decoder with cross-attention
  (Vaswani et al. 2017, "Attention Is All You Need").
- norm and its placement, dropout: layers.py. Attention (SDPA; MHA, GQA, MQA; QK-norm): attention.py.
- activation: ReLU; GELU (Hendrycks & Gimpel 2016); SiLU/Swish (Ramachandran et al. 2017); ReLU
  squared (So et al. 2021, "Primer", sec. 4; modded-nanoGPT and nanochat use it); the gated SwiGLU
  and GeGLU (Shazeer 2020), whose hidden width is 2/3 of 4d to keep parameters comparable.
- positions: learned absolute (GPT-2), sinusoidal (Vaswani et al. 2017, sec. 3.5), rotary RoPE
  (Su et al. 2021), ALiBi linear biases (Press et al. 2022).
- dropout (Srivastava et al. 2014) on embeddings, attention weights and residual branches; optional
  biases; tied input/output embeddings (Press & Wolf 2017); residual projections initialised with
  std / sqrt(2 * n_layer) (GPT-2).
- logit soft-capping: cap * tanh(logits / cap) on the output logits (Gemma 2, Gemma Team 2024,
  sec. 2; modded-nanoGPT), in `Transformer.logits`, the one place training, evaluation and
  sampling all take their logits from.

Reading order: MLPs, block, then `Transformer`; attention in attention.py, the position schemes
in positions.py. Parameter names map one-to-one onto a Hugging Face export: tok_emb, pos_emb
(learned only), blocks.{i}.{attn_norm, attn, cross_norm, cross_attn, mlp_norm, mlp}, attention as
{q,k,v,o}_proj (and q_norm, k_norm with QK-norm), MLP as {gate,up,down}_proj, norm_f, lm_head; the
encoder of an encoder-decoder is encoder_blocks.{i} and encoder_norm. Shapes: B batch, T (query)
length, S key length, C = n_embd, H heads, D = head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.errors import LmforgeError
from lmforge.model.attention import (
    CrossAttention,
    SelfAttention,
    causal_mask,
    padded_causal_mask,
    segment_mask,
)
from lmforge.model.config import ModelConfig
from lmforge.model.kv_cache import KVCache
from lmforge.model.layers import RESIDUALS, dropout, make_norm
from lmforge.model.positions import POSITIONS, LearnedPositions, Rope


def relu2(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()  # Primer's squared ReLU


def activation_function(name: str):
    """The function an `Activation.function` name stands for: ours (relu2), else torch.nn.functional's."""
    return relu2 if name == "relu2" else getattr(F, name)


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap): smooth, monotonic, |out| < cap (Gemma 2); computed in fp32 so bf16/fp16
    logits keep their range, returned in the logits' dtype. cap None: the logits unchanged."""
    if cap is None:
        return logits
    return ((logits.float() / cap).tanh_() * cap).to(logits.dtype)  # in place: one V-wide tensor fewer


# ---------------------------------------------------------------- MLPs


class MLP(nn.Module):
    """down(act(up(x))): the position-wise feed-forward network."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)
        self.act = activation_function(cfg.act.function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))  # (B, T, C) -> (B, T, F) -> (B, T, C)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU with SiLU, GeGLU with GELU (Shazeer 2020)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)
        self.act = activation_function(cfg.act.function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


# ---------------------------------------------------------------- block


class Block(nn.Module):
    """Self-attention, cross-attention (decoder of an encoder-decoder only), MLP; each a residual
    branch with dropout, normalised before (pre-norm) or after (post-norm) the add."""

    def __init__(self, cfg: ModelConfig, layer: int, cross: bool = False) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = SelfAttention(cfg, layer)
        if cross:
            self.cross_norm = make_norm(cfg)
            self.cross_attn = CrossAttention(cfg, layer)
        self.mlp_norm = make_norm(cfg)
        self.mlp = GatedMLP(cfg) if cfg.is_glu else MLP(cfg)
        self.drop = dropout(cfg.resid_dropout)
        self.residual = RESIDUALS[cfg.norm_position]
        self.recompute = False  # activation checkpointing, opt-in (lmforge/train/parallel/recompute.py)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        if self.recompute and torch.is_grad_enabled():  # keep the input, recompute the rest in backward
            return checkpoint(self.sublayers, *args, use_reentrant=False, **kwargs)
        return self.sublayers(*args, **kwargs)

    def sublayers(
        self,
        x: torch.Tensor,
        rope: Rope | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = self.residual(x, self.attn_norm, lambda h: self.drop(self.attn(h, rope, mask, is_causal, cache)))
        if memory_kv is not None:
            x = self.residual(x, self.cross_norm, lambda h: self.drop(self.cross_attn(h, memory_kv)))
        return self.residual(x, self.mlp_norm, lambda h: self.drop(self.mlp(h)))  # (B, T, C)


# ---------------------------------------------------------------- the model


class Transformer(nn.Module):
    """`model(input_ids, targets=None, *, decoder_input_ids=None, kv_cache=None) -> (logits, loss)`.

    decoder: input_ids (B, T) -> logits (B, T, V), causal. encoder: the same, bidirectional (for
    masked LM, targets are -100 except at masked positions). encoder-decoder: input_ids is the
    source (B, S), decoder_input_ids (B, T) the shifted target, targets (B, T). loss is the mean
    cross-entropy over targets != -100, or None without targets. With kv_cache the input is the
    next chunk; its positions continue from kv_cache.length and the cache is extended (a cache
    made with `pad` holds left-padded rows: each row's positions start after its padding, which no
    query attends to). last_only=True returns only the last position's logits (B, 1, V).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = POSITIONS[cfg.pos](cfg)
        self.emb_drop = dropout(cfg.embd_dropout)
        final_norm = make_norm if cfg.norm_position == "pre" else (lambda cfg: nn.Identity())
        if cfg.kind == "encoder-decoder":
            self.encoder_blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.encoder_layers))
            self.encoder_norm = final_norm(cfg)
        cross = cfg.kind == "encoder-decoder"
        self.blocks = nn.ModuleList(Block(cfg, i, cross) for i in range(cfg.n_layer))
        self.norm_f = final_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one matrix, named tok_emb.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, init_std) for matrices and tables, zero biases, unit norm gains (GPT-2); the
        projections closing a residual branch get init_std / sqrt(2 * depth of their stack)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.ones_(p)
        if not self.cfg.scaled_residual_init:
            return
        for stack in (self.blocks, getattr(self, "encoder_blocks", nn.ModuleList())):
            for name, p in stack.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    nn.init.normal_(p, 0.0, std / math.sqrt(2 * len(stack)))

    # ---- the three shapes

    def forward(
        self,
        input_ids: torch.Tensor | None,
        targets: torch.Tensor | None = None,
        *,
        decoder_input_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        last_only: bool = False,
        segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and the loss against `targets` if given. `segment_ids` with `position_ids`
        (B, T each; decoder only) run packed rows: a token attends only to earlier tokens of its own
        segment, at its position within the segment, so each packed example sees what it would alone."""
        x = self.hidden_states(
            input_ids,
            kv_cache,
            decoder_input_ids=decoder_input_ids,
            segment_ids=segment_ids,
            position_ids=position_ids,
        )  # (B, T, C)
        if last_only:  # decoding needs only the next token's logits: skip T-1 rows of the lm_head
            x = x[:, -1:]  # (B, 1, C)
        logits = self.logits(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) of final hidden states (..., C): the output layer, then cap * tanh(logits / cap)
        with model.logit_softcap. Training's loss, evaluation and sampling all take logits from here."""
        return soft_cap(self.lm_head(h), self.cfg.logit_softcap)

    def hidden_states(
        self,
        input_ids: torch.Tensor | None,
        kv_cache: KVCache | None = None,
        *,
        decoder_input_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden states (B, T, C) that `forward` projects to logits (same arguments).

        `attention_mask` (B, T, T) bool, True where token t may see token s, with `position_ids`
        (B, T): any attention pattern over a row, e.g. several continuations sharing one context
        (evaluation's packed rows). A decoder only; the caller keeps it causal."""
        if attention_mask is not None:
            return self.masked_rows(input_ids, attention_mask, position_ids)
        if segment_ids is not None:
            return self.packed_lm(input_ids, segment_ids, position_ids)
        shape = {"decoder": self.causal_lm, "encoder": self.masked_lm, "encoder-decoder": self.seq2seq}
        return shape[self.cfg.kind](input_ids, decoder_input_ids, kv_cache)

    def causal_lm(self, ids: torch.Tensor, decoder_ids: None, cache: KVCache | None) -> torch.Tensor:
        if decoder_ids is not None:
            raise LmforgeError("decoder_input_ids is for encoder-decoder models; this is a decoder")
        return self.stack(ids, self.blocks, self.norm_f, causal=True, cache=cache)

    def packed_lm(
        self, ids: torch.Tensor, segments: torch.Tensor, positions: torch.Tensor | None
    ) -> torch.Tensor:
        if self.cfg.kind != "decoder":
            raise LmforgeError(f"packed rows (segment_ids) need a decoder model, this one is {self.cfg.kind}")
        if positions is None or positions.shape != segments.shape or segments.shape != ids.shape:
            raise LmforgeError("segment_ids needs position_ids of the same (batch, time) shape as input_ids")
        return self.stack(
            ids, self.blocks, self.norm_f, causal=True, packed=(segment_mask(segments), positions)
        )

    def masked_rows(
        self, ids: torch.Tensor, keep: torch.Tensor, positions: torch.Tensor | None
    ) -> torch.Tensor:
        if self.cfg.kind != "decoder":
            raise LmforgeError(f"attention_mask needs a decoder model, this one is {self.cfg.kind}")
        if positions is None or positions.shape != ids.shape or keep.shape != (*ids.shape, ids.shape[1]):
            raise LmforgeError(
                "attention_mask (batch, time, time) needs position_ids of input_ids' (batch, time) shape"
            )
        if keep.dtype != torch.bool:
            raise LmforgeError(f"attention_mask must be bool (True = may attend), got {keep.dtype}")
        if self.pos_emb.bias(0, 1, True) is not None:  # ALiBi: distance along the row, not positions
            raise LmforgeError("attention_mask with ALiBi: its biases count distance along the row")
        return self.stack(ids, self.blocks, self.norm_f, causal=True, packed=(keep[:, None], positions))

    def masked_lm(self, ids: torch.Tensor, decoder_ids: None, cache: None) -> torch.Tensor:
        if decoder_ids is not None:
            raise LmforgeError("decoder_input_ids is for encoder-decoder models; this is an encoder")
        if cache is not None:
            raise LmforgeError("an encoder attends both ways and cannot decode with a KV cache")
        return self.stack(ids, self.blocks, self.norm_f, causal=False)

    def seq2seq(
        self, source: torch.Tensor | None, target_in: torch.Tensor | None, cache: KVCache | None
    ) -> torch.Tensor:
        """Encode the source once (or reuse the cache's cross K/V), then decode with cross-attention."""
        if target_in is None:
            raise LmforgeError("an encoder-decoder model needs decoder_input_ids (the shifted target)")
        if cache is not None and cache.pad is not None:
            raise LmforgeError(
                "left-padded batches are for decoder models; an encoder-decoder decodes one unpadded sequence"
            )
        memory_kv = cache.cross_kv if cache is not None else None
        if memory_kv is None:
            if source is None:
                raise LmforgeError("an encoder-decoder model needs input_ids (the source) on its first call")
            memory = self.stack(source, self.encoder_blocks, self.encoder_norm, causal=False)  # (B, S, C)
            memory_kv = [block.cross_attn.project_kv(memory) for block in self.blocks]
            if cache is not None:
                cache.cross_kv = memory_kv
        return self.stack(target_in, self.blocks, self.norm_f, causal=True, cache=cache, memory_kv=memory_kv)

    def stack(
        self,
        ids: torch.Tensor,
        blocks: nn.ModuleList,
        norm: nn.Module,
        causal: bool,
        cache: KVCache | None = None,
        memory_kv: list | None = None,
        packed: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embed ids (B, T) at positions [start, start+T) (or packed rows' (B, 1, T, T) keep mask and
        positions) and run them through `blocks` -> (B, T, C)."""
        if ids.dim() != 2:
            raise LmforgeError(f"input ids must be (batch, time), got shape {tuple(ids.shape)}")
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        limit = self.pos_emb.limit
        if limit is not None and start + T > limit:
            raise LmforgeError(
                f"sequence of {start + T} tokens is longer than model.block_size={limit}, "
                f"the size of the {self.cfg.pos} position table"
            )
        if cache is not None:
            cache.check(B, T)
        pos = cache.positions(T) if cache is not None else None  # (B, T) for left-padded rows, else None
        if packed is not None:
            pos = packed[1]
        x = self.emb_drop(self.pos_emb.add(self.tok_emb(ids), start, pos))  # (B, T, C)
        # Attention pattern, built once and shared by every layer. Plain causal: SDPA's is_causal
        # and no mask tensor. A chunk after cached tokens: an explicit (T, start+T) mask. Left-padded
        # rows (batched generation): a (B, 1, T, start+T) mask that also hides each row's padding.
        rope = self.pos_emb.rotary(start, T, pos)
        mask = self.pos_emb.bias(start, T, causal)  # ALiBi includes the causal -inf
        if pos is not None:
            keep = packed[0] if packed is not None else padded_causal_mask(cache.pad, start, T)
            mask = keep if mask is None else mask.masked_fill(~keep, float("-inf"))  # (B, 1 or H, T, S)
        elif mask is None and causal and start > 0 and T > 1:
            mask = causal_mask(start, T, ids.device)
        is_causal = causal and mask is None and start == 0
        for i, block in enumerate(blocks):
            x = block(x, rope, mask, is_causal, cache, memory_kv[i] if memory_kv is not None else None)
        if cache is not None:
            cache.advance(T)
        return norm(x)

    # ---- helpers for training and decoding

    def new_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        pad: list[int] | None = None,
    ) -> KVCache:
        """An empty cache for `max_len` positions (default block_size) on the model's device/dtype;
        `pad` gives each row's left padding, for a batch of prompts of different lengths."""
        if self.cfg.kind == "encoder":
            raise LmforgeError("an encoder attends both ways and cannot decode with a KV cache")
        max_len = max_len if max_len is not None else self.cfg.block_size
        limit = self.pos_emb.limit
        if limit is not None and max_len > limit:
            raise LmforgeError(
                f"KV cache of {max_len} positions is longer than model.block_size={limit}, "
                f"the size of the {self.cfg.pos} position table"
            )
        ref = self.tok_emb.weight
        return KVCache(
            self.cfg.n_layer,
            batch_size,
            self.cfg.kv_heads,
            max_len,
            self.cfg.head_dim,
            device=device if device is not None else ref.device,
            dtype=dtype if dtype is not None else ref.dtype,
            pad=pad,
        )

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay the matmul weights (every Linear, so also a tied token table); not
        norms, biases or lookup tables (the learned position table, an untied token table), whose
        rarely-seen rows decay would shrink (minGPT; OLMo 2). Every parameter in exactly one group."""
        lookup = {id(self.tok_emb.weight)} if not self.cfg.tie_embeddings else set()
        if isinstance(self.pos_emb, LearnedPositions):
            lookup.add(id(self.pos_emb.weight))
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2 and id(p) not in lookup]
        no_decay = [p for p in params if p.dim() < 2 or id(p) in lookup]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]
