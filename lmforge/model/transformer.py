"""The lmforge transformer: one family, three shapes, every choice a ModelConfig field.

Choices and the papers behind them:
- kind: decoder-only causal LM (Radford et al. 2019, GPT-2); encoder-only masked LM with
  bidirectional attention (Devlin et al. 2019, BERT); encoder-decoder with cross-attention
  (Vaswani et al. 2017, "Attention Is All You Need").
- norm: LayerNorm (Ba et al. 2016) or RMSNorm (Zhang & Sennrich 2019); placed after each residual
  add (post-norm, Vaswani et al. 2017) or before each sublayer (pre-norm, GPT-2; Xiong et al. 2020).
- activation: ReLU; GELU (Hendrycks & Gimpel 2016); SiLU/Swish (Ramachandran et al. 2017); the gated
  SwiGLU and GeGLU (Shazeer 2020), whose hidden width is 2/3 of 4d to keep parameters comparable.
- positions: learned absolute (GPT-2), sinusoidal (Vaswani et al. 2017, sec. 3.5), rotary RoPE
  (Su et al. 2021), ALiBi linear biases (Press et al. 2022).
- attention: scaled dot-product through torch's SDPA; n_kv_head key/value heads give multi-head
  (= n_head), grouped-query (Ainslie et al. 2023) or multi-query (= 1, Shazeer 2019) attention.
- dropout (Srivastava et al. 2014) on embeddings, attention weights and residual branches; optional
  biases; tied input/output embeddings (Press & Wolf 2017); residual projections initialised with
  std / sqrt(2 * n_layer) (GPT-2).

Reading order: free functions (residuals, masks, attention), then modules leaf first (attention,
MLPs, block), then `Transformer`; the position schemes are in positions.py. Parameter names map one-to-one onto a Hugging Face
export: tok_emb, pos_emb (learned only), blocks.{i}.{attn_norm, attn, cross_norm, cross_attn,
mlp_norm, mlp}, attention as {q,k,v,o}_proj, MLP as {gate,up,down}_proj, norm_f, lm_head; the
encoder of an encoder-decoder is encoder_blocks.{i} and encoder_norm. Shapes: B batch, T (query)
length, S key length, C = n_embd, H heads, D = head dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.errors import LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.model.kv_cache import KVCache
from lmforge.model.positions import POSITIONS, LearnedPositions, Rope, apply_rotary

# ---------------------------------------------------------------- small free functions


def pre_norm_residual(x: torch.Tensor, norm: nn.Module, sublayer: Callable) -> torch.Tensor:
    return x + sublayer(norm(x))  # GPT-2: the residual stream itself is never normalised


def post_norm_residual(x: torch.Tensor, norm: nn.Module, sublayer: Callable) -> torch.Tensor:
    return norm(x + sublayer(x))  # Vaswani et al. 2017: LayerNorm(x + Sublayer(x))


RESIDUALS = {"pre": pre_norm_residual, "post": post_norm_residual}


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)  # gain only, no bias or mean-centring
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


def dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()  # p = 0 costs nothing, not even a copy


def causal_mask(start: int, T: int, device: torch.device) -> torch.Tensor:
    """(T, start+T) bool, True where query start+i may see key j (j <= start+i): a new chunk of T
    tokens appended after `start` cached ones. SDPA's is_causal assumes start == 0."""
    q = torch.arange(start, start + T, device=device)
    k = torch.arange(start + T, device=device)
    return k[None, :] <= q[:, None]


def padded_causal_mask(pad: torch.Tensor, start: int, T: int) -> torch.Tensor:
    """(B, 1, T, start+T) bool for a batch of left-padded rows, row b's first pad[b] slots padding:
    causal, and padding keys hidden. A padding query still sees itself: an all-False row makes SDPA
    return NaN, which its cached values would carry into every real query (0 * NaN = NaN)."""
    q = torch.arange(start, start + T, device=pad.device)
    k = torch.arange(start + T, device=pad.device)
    causal, itself = k[None, :] <= q[:, None], k[None, :] == q[:, None]  # (T, S) each
    real = k[None, :] >= pad[:, None]  # (B, S)
    return (causal & (real[:, None, :] | itself))[:, None]  # (B, 1, T, S), broadcast over heads


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool for packed rows: causal, and only within a token's own segment (a
    block-diagonal causal mask; Krell et al. 2021, Llama 3's per-document masking)."""
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
         is_causal: bool, dropout_p: float) -> torch.Tensor:
    """q (B, H, T, D), k/v (B, H_kv, S, D) -> (B, H, T, D); H_kv < H shares each K/V head."""
    if k.shape[1] != q.shape[1] and not _NATIVE_GQA:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # an fp32 ALiBi bias under bf16 autocast
    extra = {"enable_gqa": True} if k.shape[1] != q.shape[1] else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          is_causal=is_causal, **extra)


# SDPA's enable_gqa arrived in torch 2.5; older versions repeat the K/V heads instead.
_NATIVE_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                       is_causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What SDPA computes, written out so the probabilities P = softmax(QK^T/sqrt(D) + mask) (B, H, T, S)
    can be kept (lmforge inspect): returns (P V, P). Slower; used only when a module records."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, S, D)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if is_causal:
        mask = causal_mask(0, q.shape[2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = scores.softmax(dim=-1)
    return (probs.to(v.dtype) @ v), probs  # (B, H, T, D), (B, H, T, S)

# ---------------------------------------------------------------- attention and MLPs


class Attention(nn.Module):
    """Projections and SDPA shared by self- and cross-attention."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        C, D = cfg.n_embd, cfg.head_dim
        # The model's head counts; a tensor-parallel rank holds a slice of the projections, so the
        # forward reads the head count of a projection from its width (`heads`).
        self.n_head, self.n_kv_head, self.head_dim, self.layer = cfg.n_head, cfg.kv_heads, D, layer
        self.q_proj = nn.Linear(C, cfg.n_head * D, bias=cfg.bias)
        self.k_proj = nn.Linear(C, cfg.kv_heads * D, bias=cfg.bias)
        self.v_proj = nn.Linear(C, cfg.kv_heads * D, bias=cfg.bias)
        self.o_proj = nn.Linear(cfg.n_head * D, C, bias=cfg.bias)
        self.dropout_p = cfg.attn_dropout
        self.record: list[torch.Tensor] | None = None  # opt-in: a list receiving each call's probabilities

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, width = x.shape
        return x.view(B, T, width // self.head_dim, self.head_dim).transpose(1, 2)  # (B, T, n*D) -> (B, n, T, D)

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H_kv, S, D) of a (B, S, C) sequence."""
        return self.heads(self.k_proj(memory)), self.heads(self.v_proj(memory))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               is_causal: bool) -> torch.Tensor:
        if self.record is not None:  # looking inside (lmforge inspect); SDPA stays the default path
            y, probs = explicit_attention(q, k, v, mask, is_causal)
            self.record.append(probs.detach())
        else:
            y = sdpa(q, k, v, mask, is_causal, self.dropout_p if self.training else 0.0)  # (B, H, T, D)
        B, H, T, D = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * D))  # (B, T, C)


class SelfAttention(Attention):
    def forward(self, x: torch.Tensor, rope: Rope | None, mask: torch.Tensor | None, is_causal: bool,
                cache: KVCache | None) -> torch.Tensor:
        q = self.heads(self.q_proj(x))  # (B, H, T, D)
        k, v = self.project_kv(x)  # (B, H_kv, T, D)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)  # (B, H_kv, start+T, D)
        return self.attend(q, k, v, mask, is_causal)


class CrossAttention(Attention):
    """Decoder queries over the encoder's output; its keys/values come precomputed (once per source)."""

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = self.heads(self.q_proj(x))  # (B, H, T, D)
        return self.attend(q, *memory_kv, None, False)  # every source token is visible


class MLP(nn.Module):
    """down(act(up(x))): the position-wise feed-forward network."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)
        self.act = getattr(F, cfg.act.function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))  # (B, T, C) -> (B, T, F) -> (B, T, C)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU with SiLU, GeGLU with GELU (Shazeer 2020)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)
        self.act = getattr(F, cfg.act.function)

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

    def sublayers(self, x: torch.Tensor, rope: Rope | None, mask: torch.Tensor | None, is_causal: bool,
                  cache: KVCache | None = None, memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
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

    def forward(self, input_ids: torch.Tensor | None, targets: torch.Tensor | None = None, *,
                decoder_input_ids: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                last_only: bool = False, segment_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and the loss against `targets` if given. `segment_ids` with `position_ids`
        (B, T each; decoder only) run packed rows: a token attends only to earlier tokens of its own
        segment, at its position within the segment, so each packed example sees what it would alone."""
        x = self.hidden_states(input_ids, kv_cache, decoder_input_ids=decoder_input_ids,
                               segment_ids=segment_ids, position_ids=position_ids)  # (B, T, C)
        if last_only:  # decoding needs only the next token's logits: skip T-1 rows of the lm_head
            x = x[:, -1:]  # (B, 1, C)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def hidden_states(self, input_ids: torch.Tensor | None, kv_cache: KVCache | None = None, *,
                      decoder_input_ids: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden states (B, T, C) that `forward` projects to logits (same arguments)."""
        if segment_ids is not None:
            return self.packed_lm(input_ids, segment_ids, position_ids)
        shape = {"decoder": self.causal_lm, "encoder": self.masked_lm, "encoder-decoder": self.seq2seq}
        return shape[self.cfg.kind](input_ids, decoder_input_ids, kv_cache)

    def causal_lm(self, ids: torch.Tensor, decoder_ids: None, cache: KVCache | None) -> torch.Tensor:
        if decoder_ids is not None:
            raise LmforgeError("decoder_input_ids is for encoder-decoder models; this is a decoder")
        return self.stack(ids, self.blocks, self.norm_f, causal=True, cache=cache)

    def packed_lm(self, ids: torch.Tensor, segments: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.kind != "decoder":
            raise LmforgeError(f"packed rows (segment_ids) need a decoder model, this one is {self.cfg.kind}")
        if positions is None or positions.shape != segments.shape or segments.shape != ids.shape:
            raise LmforgeError("segment_ids needs position_ids of the same (batch, time) shape as input_ids")
        return self.stack(ids, self.blocks, self.norm_f, causal=True, segments=(segments, positions))

    def masked_lm(self, ids: torch.Tensor, decoder_ids: None, cache: None) -> torch.Tensor:
        if decoder_ids is not None:
            raise LmforgeError("decoder_input_ids is for encoder-decoder models; this is an encoder")
        if cache is not None:
            raise LmforgeError("an encoder attends both ways and cannot decode with a KV cache")
        return self.stack(ids, self.blocks, self.norm_f, causal=False)

    def seq2seq(self, source: torch.Tensor | None, target_in: torch.Tensor | None,
                cache: KVCache | None) -> torch.Tensor:
        """Encode the source once (or reuse the cache's cross K/V), then decode with cross-attention."""
        if target_in is None:
            raise LmforgeError("an encoder-decoder model needs decoder_input_ids (the shifted target)")
        if cache is not None and cache.pad is not None:
            raise LmforgeError("left-padded batches are for decoder models; "
                               "an encoder-decoder decodes one unpadded sequence")
        memory_kv = cache.cross_kv if cache is not None else None
        if memory_kv is None:
            if source is None:
                raise LmforgeError("an encoder-decoder model needs input_ids (the source) on its first call")
            memory = self.stack(source, self.encoder_blocks, self.encoder_norm, causal=False)  # (B, S, C)
            memory_kv = [block.cross_attn.project_kv(memory) for block in self.blocks]
            if cache is not None:
                cache.cross_kv = memory_kv
        return self.stack(target_in, self.blocks, self.norm_f, causal=True, cache=cache, memory_kv=memory_kv)

    def stack(self, ids: torch.Tensor, blocks: nn.ModuleList, norm: nn.Module, causal: bool,
              cache: KVCache | None = None, memory_kv: list | None = None,
              segments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Embed ids (B, T) at positions [start, start+T) (or packed rows' (segment ids, positions))
        and run them through `blocks` -> (B, T, C)."""
        if ids.dim() != 2:
            raise LmforgeError(f"input ids must be (batch, time), got shape {tuple(ids.shape)}")
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        limit = self.pos_emb.limit
        if limit is not None and start + T > limit:
            raise LmforgeError(f"sequence of {start + T} tokens is longer than model.block_size={limit}, "
                               f"the size of the {self.cfg.pos} position table")
        if cache is not None:
            cache.check(B, T)
        pos = cache.positions(T) if cache is not None else None  # (B, T) for left-padded rows, else None
        if segments is not None:
            pos = segments[1]
        x = self.emb_drop(self.pos_emb.add(self.tok_emb(ids), start, pos))  # (B, T, C)
        # Attention pattern, built once and shared by every layer. Plain causal: SDPA's is_causal
        # and no mask tensor. A chunk after cached tokens: an explicit (T, start+T) mask. Left-padded
        # rows (batched generation): a (B, 1, T, start+T) mask that also hides each row's padding.
        rope = self.pos_emb.rotary(start, T, pos)
        mask = self.pos_emb.bias(start, T, causal)  # ALiBi includes the causal -inf
        if pos is not None:
            keep = (segment_mask(segments[0]) if segments is not None
                    else padded_causal_mask(cache.pad, start, T))
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

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, *, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None, pad: list[int] | None = None) -> KVCache:
        """An empty cache for `max_len` positions (default block_size) on the model's device/dtype;
        `pad` gives each row's left padding, for a batch of prompts of different lengths."""
        if self.cfg.kind == "encoder":
            raise LmforgeError("an encoder attends both ways and cannot decode with a KV cache")
        max_len = max_len if max_len is not None else self.cfg.block_size
        limit = self.pos_emb.limit
        if limit is not None and max_len > limit:
            raise LmforgeError(f"KV cache of {max_len} positions is longer than model.block_size={limit}, "
                               f"the size of the {self.cfg.pos} position table")
        ref = self.tok_emb.weight
        return KVCache(self.cfg.n_layer, batch_size, self.cfg.kv_heads, max_len, self.cfg.head_dim,
                       device=device if device is not None else ref.device,
                       dtype=dtype if dtype is not None else ref.dtype, pad=pad)

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
