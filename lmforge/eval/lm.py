"""The model as the evaluator sees it: text <-> token ids, token ids -> hidden states -> logits.

Every scorer in `lmforge.eval` works through this small interface, so the same engine evaluates an
lmforge run (`LmforgeLM`) and any Hugging Face causal LM (`HFCausalLM`), which is how the parity
benchmark runs lm-evaluation-harness and lmforge on one model.

The forward is split into `hidden` (final hidden states) and `head` (the output projection) so the
engine projects only the positions it scores: for a 50k vocabulary the output layer and its
log-softmax dominate a small model's cost, and a multiple-choice request scores a handful of
continuation tokens after a context ten times longer. `hidden_shared` runs a context once and its
continuations after it, from the KV cache (lm-eval re-encodes the context for every choice, see
its issue #1351); `hidden_packed` does the same in one ordinary forward over a row holding the
context and all its continuations, for backends that take a custom attention mask.
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig
from lmforge.serve.sampling import sample


class LM(ABC):
    """A causal language model with its tokenizer."""

    name: str = "lm"  # shown in results; part of the cache key
    max_length: int  # context length in tokens (lm-eval's `max_length`)
    prefix_token_id: int  # token fed before an empty context: BOS, else end-of-text (lm-eval)
    eot_token_id: int
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts (backends override this with their tokenizer's batch call)."""
        return [self.encode(t) for t in texts]

    @abstractmethod
    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, C) of a right-padded batch of ids (B, T), causal."""

    @abstractmethod
    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) of hidden states (N, C)."""

    def hidden_shared(
        self, prefixes: torch.Tensor, suffixes: torch.Tensor, owner: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run G equal-length prefixes (G, P) once, then each suffix row (R, S) after its prefix
        `owner[r]`. Returns the prefixes' last hidden states (G, C) and the suffixes' (R, S, C).

        This fallback concatenates (no reuse); backends with a KV cache override it.
        """
        P = prefixes.shape[1]
        h = self.hidden(torch.cat([prefixes[owner], suffixes], dim=1))  # (R, P+S, C)
        h_last = torch.zeros(prefixes.shape[0], h.shape[-1], dtype=h.dtype, device=h.device)
        h_last[owner] = h[:, P - 1]
        return h_last, h[:, P:]

    def packs_prefixes(self) -> bool:
        """Whether `hidden_packed` works on this backend (else the engine shares through `hidden_shared`)."""
        return False

    def hidden_packed(self, ids: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, C) of packed rows (B, T): token i sits at `positions[b, i]` and attends
        to token j only where `keep[b, i, j]` (B, T, T, bool). The engine packs requests sharing a token
        prefix into one row as a trie (`eval/trie_rows.py`), each token seeing its ancestors, so a
        shared prefix runs once in one ordinary forward (no cache, rows of any shape batch together)."""
        raise NotImplementedError(f"{type(self).__name__} has no packed-row forward")

    def generate_tokens(
        self, prompt: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int | None = None
    ) -> Iterator[int]:
        """Yield sampled continuation ids (greedy at temperature 0); the caller decides when to stop.

        A plain loop with a growing context (no cache); backends override it with their cache.
        """
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else seed)
        ids = list(prompt)
        for _ in range(max_new_tokens):
            x = torch.tensor([ids[-self.max_length :]], dtype=torch.long, device=self.device)
            with torch.inference_mode():
                logits = self.head(self.hidden(x)[0, -1:])[0].float()
            # greedy (the first index on ties, as lm-eval and HF) or a plain temperature sample
            tok = int(sample(logits.cpu(), SampleConfig(temperature=max(temperature, 0.0), top_k=None), gen))
            yield tok
            ids.append(tok)

    def fingerprint(self) -> str:
        """Identifies the weights, for the result cache; override when the name is not enough."""
        return self.name


# ---------------------------------------------------------------- lmforge models


class LmforgeLM(LM):
    """An lmforge decoder Transformer and its Tokenizer."""

    def __init__(
        self, model: torch.nn.Module, tokenizer, name: str = "lmforge", fingerprint: str | None = None
    ):
        cfg = model.cfg
        if cfg.kind != "decoder":
            raise LmforgeError(f"evaluation scores causal (decoder) models; this model is a {cfg.kind}")
        self.model = model.eval()
        self.tok = tokenizer
        self.name = name
        self.max_length = cfg.block_size
        self.prefix_token_id = tokenizer.eot_id  # no BOS: the document boundary, like GPT-2's
        self.eot_token_id = tokenizer.eot_id
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self._fingerprint = fingerprint or name
        self._packs: bool | None = None  # decided on first use by `packs_prefixes`

    @classmethod
    def from_run(cls, path: str | Path, device: str = "cpu") -> LmforgeLM:
        """Load the latest checkpoint of a run directory (or a checkpoint directory)."""
        from lmforge.tokenizer import Tokenizer
        from lmforge.train.checkpoint import load_model, resolve_checkpoint, weights_file

        path = Path(path)
        model, _cfg = load_model(path, device=device)
        tok_path = next(
            (p / "tokenizer.json" for p in (path, path.parent.parent) if (p / "tokenizer.json").is_file()),
            None,
        )
        if tok_path is None:
            raise LmforgeError(f"no tokenizer.json in {path} or its run directory")
        ckpt = resolve_checkpoint(path)
        weights = weights_file(ckpt)  # model.safetensors, or a distributed checkpoint's metadata
        stat = weights.stat()
        fp = hashlib.sha256(f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[
            :16
        ]
        return cls(model, Tokenizer.load(tok_path), name=f"{path.name}@{ckpt.name}", fingerprint=fp)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tok.encode_batch(list(texts))

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.hidden_states(ids.to(self.device))  # (B, T, C)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.logits(h)  # the output layer and model.logit_softcap, as in training

    def hidden_shared(self, prefixes, suffixes, owner):
        m = self.model
        (G, P), (R, S) = prefixes.shape, suffixes.shape
        pre = m.new_kv_cache(G, P)
        hp = m.hidden_states(prefixes.to(self.device), kv_cache=pre)  # (G, P, C)
        if S == 0:
            return hp[:, -1], hp.new_zeros(R, 0, hp.shape[-1])
        cache = pre.select_rows(owner, max_len=P + S)  # row r continues prefix owner[r]
        hs = m.hidden_states(suffixes.to(self.device), kv_cache=cache)  # (R, S, C)
        return hp[:, -1], hs

    def hidden_packed(self, ids, positions, keep):
        # The model's own forward under the packed mask (ALiBi refuses: `packs_prefixes` then keeps
        # the KV-cache path); `packs_prefixes` checks the result against whole requests.
        d = self.device
        return self.model.hidden_states(ids.to(d), position_ids=positions.to(d), attention_mask=keep.to(d))

    def packs_prefixes(self) -> bool:
        if self._packs is None:
            self._packs = _packing_agrees(self)
        return self._packs

    def generate_tokens(self, prompt, max_new_tokens, temperature=0.0, seed=None):
        from lmforge.serve.config import SampleConfig
        from lmforge.serve.generate import generate_tokens

        cfg = SampleConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=None, seed=seed)
        yield from generate_tokens(self.model, list(prompt)[-self.max_length :], cfg)

    def fingerprint(self) -> str:
        return self._fingerprint


# ---------------------------------------------------------------- Hugging Face models


class HFCausalLM(LM):
    """A `transformers` causal LM and its tokenizer (used for parity with lm-eval's `hf` model)."""

    def __init__(self, model, tokenizer, name: str = "hf", max_length: int | None = None):
        self.model = model.eval()
        self.tok = tokenizer
        self.name = name
        cfg = model.config
        # lm-eval's resolve_max_length: the model config's n_positions / max_position_embeddings /
        # n_ctx, else the tokenizer's model_max_length, else 2048.
        found = [
            getattr(cfg, k) for k in ("n_positions", "max_position_embeddings", "n_ctx") if hasattr(cfg, k)
        ]
        self.max_length = max_length or (found[0] if found else min(tokenizer.model_max_length, 2048))
        self.eot_token_id = tokenizer.eos_token_id
        self.prefix_token_id = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        self.device = next(model.parameters()).device
        self.body = model.base_model  # GPT2LMHeadModel.transformer, LlamaForCausalLM.model, ...
        self.lm_head = model.get_output_embeddings()
        self.softcap = getattr(cfg, "final_logit_softcapping", None)  # applied after lm_head
        # transformers >= 5 renamed `past_key_values` to `cache` (argument and output field).
        params = inspect.signature(self.body.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._packs: bool | None = None  # decided on first use by `packs_prefixes`

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", dtype: str = "float32") -> HFCausalLM:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise LmforgeError("Hugging Face models need transformers: pip install 'lmforge[eval]'") from None
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
        return cls(model, tok, name=str(path))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        backend = getattr(self.tok, "_tokenizer", None)  # the Rust tokenizer of a fast tokenizer
        if backend is None:
            return [self.encode(t) for t in texts]
        return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids))

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return self.body(input_ids=ids.to(self.device), use_cache=False).last_hidden_state

    def head(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(h)
        if self.softcap:  # Gemma 2/3 squash the final logits (cap * tanh(logits / cap)) in forward()
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def hidden_shared(self, prefixes, suffixes, owner):
        R, S = suffixes.shape
        out = self.body(input_ids=prefixes.to(self.device), use_cache=True)
        hp = out.last_hidden_state[:, -1]  # (G, C)
        if S == 0:
            return hp, hp.new_zeros(R, 0, hp.shape[-1])
        cache = getattr(out, self._cache_kw)
        cache.batch_select_indices(owner.to(self.device))  # row r continues prefix owner[r]
        hs = self.body(
            input_ids=suffixes.to(self.device), use_cache=True, **{self._cache_kw: cache}
        ).last_hidden_state
        return hp, hs

    def hidden_packed(self, ids, positions, keep):
        # A (B, 1, T, T) boolean mask is taken as the attention pattern itself by transformers' models
        # that accept custom 4-D masks; `packs_prefixes` checks that this model honours it.
        return self.body(
            input_ids=ids.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=keep[:, None].to(self.device),
            use_cache=False,
        ).last_hidden_state

    def packs_prefixes(self) -> bool:
        """Try a packed row once against the same requests run whole: a model that rejects or
        ignores a 4-D mask or position ids scores through the KV cache instead."""
        if self._packs is None:
            # A custom mask replaces a sliding-window mask too (Mistral, Gemma's local layers), and the
            # short check below cannot see a window: such models keep the KV-cache path.
            cfg = self.model.config
            windowed = getattr(cfg, "sliding_window", None) is not None and getattr(
                cfg, "use_sliding_window", True
            )
            self._packs = not windowed and _packing_agrees(self)
        return self._packs

    def fingerprint(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        first = next(self.model.parameters()).detach().flatten()[:64].double().sum().item()
        return f"{self.name}:{n}:{first:.12g}"


def _packing_agrees(lm: LM) -> bool:
    """A context of 3 tokens with continuations of 2 and 3 packed as one row (positions
    0 1 2 3 4 3 4 5) must give the hidden states of the two requests run whole."""
    pad = getattr(getattr(lm, "tok", None), "pad_token_id", None)
    t = [i for i in range(1, 10) if i != pad]  # no padding id: transformers would warn about it
    ctx, a, b = t[:3], t[3:5], t[5:8]
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
    keep = torch.ones(8, 8, dtype=torch.bool).tril() & (
        (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
    )
    with torch.inference_mode():
        try:
            h = lm.hidden_packed(torch.tensor([ctx + a + b]), torch.tensor([[0, 1, 2, 3, 4, 3, 4, 5]]), keep)
        except (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError, LmforgeError):
            return False
        whole_a, whole_b = lm.hidden(torch.tensor([ctx + a])), lm.hidden(torch.tensor([ctx + b]))
    if h.shape[:2] != (1, 8):
        return False
    got = torch.cat([h[0, :5], h[0, 5:]]).float()
    want = torch.cat([whole_a[0], whole_b[0, 3:]]).float()
    return bool(torch.allclose(got, want, rtol=1e-3, atol=1e-4 * max(1.0, float(want.abs().max()))))
