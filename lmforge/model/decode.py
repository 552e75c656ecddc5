"""One-token decoding steps for decoder models: `Transformer.forward` with a KV cache, rearranged for speed.

At the sizes lmforge trains on a CPU, a decoding step is a few dozen small matmuls and a hundred
or so tiny elementwise ops, so how the matmuls are called and how many ops run matter as much as
the arithmetic. A `Decoder` step does the same computation as the model's cached forward, with:

- q/k/v fused into one matmul and gate/up into one (concatenated copies of the weights, built once
  per parameter state; the model, its state_dict and the export mapping are untouched);
- on CPU in fp32, matmuls on oneDNN-prepacked weights: the sgemm behind F.linear re-packs the
  weight on every call; the 17 matmuls of a batch-8 step of the tiny model took 2.2 ms that way,
  1.0 ms prepacked (bench/RESULTS.md);
- the new key/value written at a slot held in a tensor, and attention over the whole preallocated
  cache with a mask, so every step has the same shapes: with `compile=True`, torch.compile builds
  the step once and inductor fuses the elementwise ops (norms, RoPE, activations, residual adds).

Embeddings, positions, norms, activations and the residual wiring are the model's own modules;
the projections and the one-query attention are written out here. `Transformer.forward` stays the
reference: tests check that both give the same tokens. Shapes: B rows, H query heads, H_kv K/V
heads, D head dim, S cache slots, V vocabulary.
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError
from lmforge.model.kv_cache import KVCache
from lmforge.model.positions import apply_rotary
from lmforge.model.transformer import GatedMLP, Transformer

# ---------------------------------------------------------------- prepacked matmuls

# Packing is a one-off layout change for oneDNN's blocked kernels; the batch size is only a hint
# for choosing the layout, and 8 served batches 1-16 as well as each batch's own hint (measured).
PACK_HINT = 8
_PACKED: dict[int, torch.Tensor] = {}  # storage address of a handle (see `pack`) -> a packed weight


# A custom op so that torch.compile calls it as a black box (inductor cannot take oneDNN's opaque
# tensors as graph inputs); defined with torch.library.Library rather than @custom_op, whose
# dispatch costs ~7 us more a call (measured), as much as a small matmul.
_LIB = torch.library.Library("lmforge", "DEF")
_LIB.define("packed_linear(Tensor x, Tensor handle, Tensor? bias) -> Tensor")


def packed_linear(x: torch.Tensor, handle: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) for the weight packed under `handle`."""
    return torch.ops.mkldnn._linear_pointwise(x, _PACKED[handle.data_ptr()], bias, "none", [], "")


_LIB.impl("packed_linear", packed_linear, "CPU")


@torch.library.register_fake("lmforge::packed_linear")
def _(x: torch.Tensor, handle: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], handle.shape[0]))


def pack(weight: torch.Tensor, keys: list[int]) -> torch.Tensor:
    """Pack `weight` (N, K) for oneDNN and return its handle: an (N, 1) tensor of no meaning but its
    own storage, whose address keys the packed copy and whose N gives the op its output size.
    A plain tensor, so it can be a graph input; appends the key to `keys` (the owner's list)."""
    handle = weight.new_empty((weight.shape[0], 1))
    _PACKED[handle.data_ptr()] = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_HINT)
    keys.append(handle.data_ptr())
    return handle


def can_pack(weight: torch.Tensor) -> bool:
    """oneDNN packing pays on CPU in fp32 (bf16 has no fast path on AVX2-only machines)."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, packed: bool) -> torch.Tensor:
    """F.linear; when `packed`, `weight` is the handle of a packed weight."""
    return torch.ops.lmforge.packed_linear(x, weight, bias) if packed else F.linear(x, weight, bias)


# ---------------------------------------------------------------- weights


class LayerWeights(NamedTuple):
    qkv: torch.Tensor  # (H*D + 2*H_kv*D, C): q_proj, k_proj, v_proj stacked
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    up: torch.Tensor  # (2F, C) gate_proj then up_proj for GLU MLPs, else up_proj (F, C)
    up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


def _stack(*ts: torch.Tensor | None) -> torch.Tensor | None:
    """The tensors concatenated along the output dimension (a copy); None for absent biases."""
    return None if ts[0] is None else torch.cat([t.detach() for t in ts])


def layer_weights(block: torch.nn.Module) -> LayerWeights:
    a, m = block.attn, block.mlp
    gated = isinstance(m, GatedMLP)
    up = (m.gate_proj, m.up_proj) if gated else (m.up_proj,)
    return LayerWeights(
        _stack(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight), _stack(a.q_proj.bias, a.k_proj.bias, a.v_proj.bias),
        a.o_proj.weight.detach(), _stack(a.o_proj.bias),
        _stack(*(p.weight for p in up)), _stack(*(p.bias for p in up)),
        m.down_proj.weight.detach(), _stack(m.down_proj.bias))


class DecodeWeights:
    """The fused weights of one model, rebuilt when its parameters change. On CPU in fp32 they are
    packed: the fields then hold handles (`pack`), and the packed copies live while this object does.
    Either way it holds about one more copy of the block weights than the model."""

    def __init__(self) -> None:
        self.signature: tuple | None = None
        self.layers: list[LayerWeights] = []
        self.head: torch.Tensor | None = None
        self.packed = False
        self._keys: list[int] = []  # this object's entries in _PACKED
        weakref.finalize(self, _forget, self._keys)

    def refresh(self, model: Transformer) -> None:
        """Rebuild if any parameter was replaced, moved or updated in place since the last build."""
        signature = parameter_signature(model)
        if signature == self.signature:
            return
        with torch.no_grad():
            self.layers = [layer_weights(block) for block in model.blocks]
            self.head = model.lm_head.weight.detach()
            self.packed = can_pack(self.head)
            _forget(self._keys)
            if self.packed:
                self.head = pack(self.head, self._keys)
                self.layers = [lw._replace(**{f: pack(getattr(lw, f), self._keys) for f in ("qkv", "o", "up", "down")})
                               for lw in self.layers]
        self.signature = signature


def _forget(keys: list[int]) -> None:
    for key in keys:
        _PACKED.pop(key, None)
    keys.clear()


def parameter_signature(model: torch.nn.Module) -> tuple:
    """Changes when a parameter is replaced, moved to another device/dtype, or updated in place."""
    return tuple((p.data_ptr(), p.dtype, p._version if not p.is_inference() else 0) for p in model.parameters())


_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> DecodeWeights


def decode_weights(model: Transformer) -> DecodeWeights:
    weights = _WEIGHTS.get(model)
    if weights is None:
        weights = _WEIGHTS[model] = DecodeWeights()
    weights.refresh(model)
    return weights


# ---------------------------------------------------------------- the step


def decode_step(model: Transformer, w: DecodeWeights, tokens: torch.Tensor, slot: torch.Tensor,
                pad: torch.Tensor, ks: list[torch.Tensor], vs: list[torch.Tensor]) -> torch.Tensor:
    """Feed tokens (B, 1) at cache slot `slot` (1,) of rows left-padded by `pad` (B,); write their
    keys/values into ks/vs (per layer, (B, H_kv, S, D)) and return next-token logits (B, V)."""
    pos = (slot - pad).clamp_min(0)[:, None]  # (B, 1): a row's position is its slot minus its padding
    x = model.pos_emb.add(model.tok_emb(tokens), 0, pos)  # (B, 1, C)
    rope = model.pos_emb.rotary(0, 1, pos)  # (B, 1, 1, D/2) cos, sin, or None
    # Scores and softmax in fp32 at least (as SDPA's kernels do for bf16), in fp64 for an fp64 model.
    mask = attention_mask(model, slot, pad, ks[0].shape[2], torch.promote_types(ks[0].dtype, torch.float32))
    for block, lw, k_cache, v_cache in zip(model.blocks, w.layers, ks, vs):
        x = block_step(block, lw, x, rope, mask, slot, k_cache, v_cache, w.packed)
    return linear(model.norm_f(x)[:, 0], w.head, None, w.packed)  # (B, V)


def block_step(block: torch.nn.Module, lw: LayerWeights, x: torch.Tensor, rope, mask: torch.Tensor,
               slot: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, packed: bool) -> torch.Tensor:
    """Block.forward for one token per row; the block's own norms and residual wiring (pre/post)."""
    x = block.residual(x, block.attn_norm, lambda h: attend(block.attn, lw, h, rope, mask, slot, k_cache, v_cache,
                                                            packed))
    return block.residual(x, block.mlp_norm, lambda h: feed_forward(block.mlp, lw, h, packed))  # (B, 1, C)


def attention_mask(model: Transformer, slot: torch.Tensor, pad: torch.Tensor, S: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """Additive mask over the cache's S slots: row b's query at `slot` sees slots pad[b]..slot.
    (B, 1, 1, S), or with ALiBi (B, H_kv, H/H_kv, S) carrying each head's distance bias."""
    k = torch.arange(S, device=slot.device)
    keep = (k[None, :] <= slot) & (k[None, :] >= pad[:, None])  # (B, S)
    mask = torch.zeros(keep.shape, dtype=dtype, device=slot.device).masked_fill(~keep, float("-inf"))
    mask = mask[:, None, None]  # (B, 1, 1, S)
    if model.cfg.pos != "alibi":
        return mask
    bias = model.pos_emb.slopes.to(dtype)[:, None] * (k - slot).to(dtype)  # (H, S): -slope * distance
    return mask + bias.view(1, model.cfg.kv_heads, -1, S)


def attend(attn: torch.nn.Module, lw: LayerWeights, h: torch.Tensor, rope, mask: torch.Tensor,
           slot: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, packed: bool) -> torch.Tensor:
    """Self-attention of one query per row over the cache; (B, 1, C) -> (B, 1, C)."""
    B = h.shape[0]
    H, Hkv, D = attn.n_head, attn.n_kv_head, attn.head_dim
    qk, v = linear(h, lw.qkv, lw.qkv_bias, packed).split([(H + Hkv) * D, Hkv * D], dim=-1)
    qk, v = qk.view(B, H + Hkv, 1, D), v.view(B, Hkv, 1, D)  # T = 1: the heads are a view
    if rope is not None:  # query and key heads rotate alike: one call for both
        qk = apply_rotary(qk, *rope)
    q, k = qk.split([H, Hkv], dim=1)
    k_cache.index_copy_(2, slot, k)
    v_cache.index_copy_(2, slot, v)
    # Query heads grouped by the K/V head they share (GQA): (B, H_kv, H/H_kv, D), no repeated K/V.
    scores = torch.matmul(q.reshape(B, Hkv, H // Hkv, D), k_cache.transpose(-1, -2))  # (B, H_kv, H/H_kv, S)
    probs = torch.softmax(scores.to(mask.dtype) * (1.0 / math.sqrt(D)) + mask, dim=-1).to(v_cache.dtype)
    y = torch.matmul(probs, v_cache).reshape(B, 1, H * D)
    return linear(y, lw.o, lw.o_bias, packed)


def feed_forward(mlp: torch.nn.Module, lw: LayerWeights, h: torch.Tensor, packed: bool) -> torch.Tensor:
    u = linear(h, lw.up, lw.up_bias, packed)  # (B, 1, 2F) gate and up, or (B, 1, F)
    if isinstance(mlp, GatedMLP):
        gate, u = u.chunk(2, dim=-1)
        u = mlp.act(gate) * u
    else:
        u = mlp.act(u)
    return linear(u, lw.down, lw.down_bias, packed)


@functools.cache
def compiled_step():
    """decode_step through torch.compile, made once per process: dynamo keys its graphs on the
    inputs' shapes and the model, so every Decoder of the same shapes reuses one graph. A new
    batch size or cache length compiles once more, with that size symbolic from then on
    (torch.compile's automatic dynamic shapes), so lengths varying per request stop compiling."""
    return torch.compile(decode_step, fullgraph=True)


EAGER_COPY_BYTES = 2**30  # 1 GiB of block weights: GPT-2 350M in fp32 fits, Llama 1B does not


class Decoder:
    """Next-token logits for a decoder model, one token per row, after a prefill has filled `cache`.

    `decoder(tokens)` takes (B,) ids at the cache's next slot and returns logits (B, V), advancing
    the cache. The model must be in eval mode (dropout is skipped) and the calls inside
    torch.inference_mode. compile=True runs the step through torch.compile (`compiled_step`):
    seconds of compiling on the first call, then fewer, fused kernels per token.
    """

    def __init__(self, model: Transformer, cache: KVCache, compile: bool = False) -> None:
        if not self.supports(model):
            raise LmforgeError("Decoder is for decoder models whose projections are plain linear layers "
                               f"(this is a {model.cfg.kind}, or has adapters such as LoRA: merge them first)")
        if model.training:
            raise LmforgeError("Decoder needs the model in eval mode (it skips dropout)")
        self.model, self.cache = model, cache
        self.weights = decode_weights(model)
        device = cache.k[0].device
        self.slot = torch.tensor([cache.length], device=device)
        self.pad = cache.pad if cache.pad is not None else torch.zeros(cache.batch_size, dtype=torch.long,
                                                                       device=device)
        self.step = compiled_step() if compile else decode_step

    @staticmethod
    def wanted(model: Transformer, compile: bool = False, limit: int = EAGER_COPY_BYTES) -> bool:
        """Whether generation should decode through a Decoder. With compile, whenever it supports the
        model. Eager, only on the CPU and while the fused copy (about the block weights again) stays
        under `limit` bytes: the gain is on small CPU models, and a second copy of a big model's
        weights could exhaust memory that the model's own forward does not need."""
        if not Decoder.supports(model):
            return False
        if compile:
            return True
        head = model.lm_head.weight
        size = sum(p.numel() * p.element_size() for p in model.blocks.parameters())
        return head.device.type == "cpu" and size <= limit

    @staticmethod
    def supports(model: Transformer) -> bool:
        """A decoder whose projections are all plain nn.Linear: the fused weights are read from them
        (a LoRA-wrapped layer, say, adds its update in its forward)."""
        if model.cfg.kind != "decoder":
            return False
        projections = [model.lm_head] + [m for block in model.blocks
                                         for m in (*block.attn.children(), *block.mlp.children())]
        return all(type(m) is torch.nn.Linear for m in projections)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        cache = self.cache
        cache.check(tokens.shape[0], 1)
        self.slot.fill_(cache.length)
        logits = self.step(self.model, self.weights, tokens[:, None], self.slot, self.pad, cache.k, cache.v)
        cache.advance(1)
        return logits
