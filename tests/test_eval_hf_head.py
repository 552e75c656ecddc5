"""HFCausalLM's split forward (hidden states, then the output layer) gives the logits the model's own
forward gives, including models that post-process them (Gemma 2's final logit soft-capping)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmforge.eval.lm import HFCausalLM
from lmforge.tiny import hf_tokenizer, tiny_tokenizer


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_split_forward_equals_the_models_logits(arch):
    tok = hf_tokenizer(tiny_tokenizer(vocab_size=300))
    torch.manual_seed(0)
    if arch == "gemma2":
        cfg = transformers.Gemma2Config(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=64,
            final_logit_softcapping=0.05,  # small: the cap must bite on random weights
        )
        model = transformers.Gemma2ForCausalLM(cfg)
    else:
        cfg = transformers.GPT2Config(
            vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64
        )
        model = transformers.GPT2LMHeadModel(cfg)
    lm = HFCausalLM(model.eval(), tok)
    ids = torch.randint(3, tok.vocab_size, (2, 12))
    with torch.inference_mode():
        want = model(input_ids=ids).logits
        got = lm.head(lm.hidden(ids))
    assert torch.allclose(got, want, atol=1e-5)
    if arch == "gemma2":
        assert not torch.allclose(lm.lm_head(lm.hidden(ids)), want, atol=1e-3)  # the cap mattered
