"""DPO parity with TRL (issue 17 part 3): on the same tiny Llama (an lmforge model exported to a
Hugging Face folder: the same function, tested in test_export_import.py), the same preference
pairs and beta, lmforge's DPO loss and its gradient equal TRL's DPOTrainer within 1e-5, for the
sigmoid loss and IPO. TRL tokenizes the pairs itself through the exported chat template; the test
first checks that its token ids and completion masks are lmforge's, then compares the objectives
on TRL's own collated batch."""

from __future__ import annotations

import copy

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is in the test extra (pip install -e .[test])")
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

from lmforge.export.hf_export import export_model
from lmforge.export.llama import to_hf
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.tune.dpo_source import DpoObjective, collate_pairs, encode_pairs, frozen_reference
from lmforge.tune.prefs import PreferencePair

WORDS = ["red", "blue", "green", "apple", "tree", "sky", "dog", "cat", "sun", "moon"]
BETA = 0.1


def pairs() -> list[PreferencePair]:
    """Replies of different lengths (so padding and the IPO length normalisation both matter),
    one prompt with an earlier assistant turn (only the last reply is scored)."""
    out = [
        PreferencePair(
            prompt=[{"role": "user", "content": f"say {w}"}],
            chosen=f"{w} yes",
            rejected=f"{w} no no" if i % 2 else "no",
            line=i + 1,
        )
        for i, w in enumerate(WORDS[:5])
    ]
    out.append(
        PreferencePair(
            prompt=[
                {"role": "user", "content": "say sky"},
                {"role": "assistant", "content": "sky"},
                {"role": "user", "content": "again"},
            ],
            chosen="sky sky",
            rejected="dog",
            line=6,
        )
    )
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(tokenizer, reference, policy) lmforge models and their exported HF folders."""
    root = tmp_path_factory.mktemp("dpo_trl")
    tok = train_tokenizer(
        [" ".join(WORDS + ["say", "yes", "no", "again"]) * 50],
        TokenizerConfig(vocab_size=300, min_frequency=2),
    )
    torch.manual_seed(0)
    ref = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size,
            block_size=48,
            n_layer=2,
            n_embd=32,
            n_head=4,
            pos="rope",
            activation="swiglu",
            norm="rmsnorm",
            bias=False,
            tie_embeddings=False,
        )
    )
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # the policy has moved away from the reference, so the log-ratios are not 0
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_model(ref.eval(), tok, root / "ref")
    export_model(policy.eval(), tok, root / "policy")
    return tok, ref, policy, root


def trl_loss_and_grads(root, loss_type: str) -> tuple[float, dict[str, torch.Tensor], dict]:
    hf_policy = transformers.AutoModelForCausalLM.from_pretrained(root / "policy", dtype=torch.float32)
    hf_ref = transformers.AutoModelForCausalLM.from_pretrained(root / "ref", dtype=torch.float32)
    htok = transformers.AutoTokenizer.from_pretrained(root / "policy")
    rows = [
        {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs()
    ]
    args = trl.DPOConfig(
        output_dir=str(root / f"trl-{loss_type}"),
        per_device_train_batch_size=len(rows),
        beta=BETA,
        loss_type=[loss_type],
        report_to=[],
        use_cpu=True,
        max_length=None,
        save_strategy="no",
        dataloader_num_workers=0,
        bf16=False,
    )  # TRL defaults to bf16 autocast; the parity is in fp32
    trainer = trl.DPOTrainer(
        model=hf_policy,
        ref_model=hf_ref,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=htok,
    )
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    batch = trainer.data_collator(examples)
    hf_policy.train()
    loss = trainer.compute_loss(hf_policy, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in hf_policy.named_parameters()}
    return float(loss.detach()), grads, {"examples": examples, "batch": batch}


def lmforge_loss_and_grads(tok, ref, policy, loss_type: str) -> tuple[float, dict[str, torch.Tensor], dict]:
    model = copy.deepcopy(policy).train()
    encoded, truncated, dropped = encode_pairs(pairs(), tok, seq_len=48, overlong="truncate")
    assert (truncated, dropped) == (0, 0)
    objective = DpoObjective(frozen_reference(copy.deepcopy(ref)), BETA, loss_type, 0.0)
    batch = collate_pairs(encoded, tok.pad_id)
    loss = objective(model, batch) / len(encoded)  # the loop's weight: the mean over the step's pairs
    loss.backward()
    grads = to_hf({n: p.grad for n, p in model.named_parameters()}, model.cfg)
    return float(loss.detach()), grads, {"encoded": encoded}


def test_trl_tokenizes_pairs_as_lmforge(models):
    tok, ref, policy, root = models
    _, _, theirs = trl_loss_and_grads(root, "sigmoid")
    _, _, ours = lmforge_loss_and_grads(tok, ref, policy, "sigmoid")
    for ex, pair in zip(theirs["examples"], ours["encoded"]):
        for side, row in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            ids = ex["prompt_ids"] + ex[f"{side}_ids"]
            assert ids == row.ids
            assert [i >= len(ex["prompt_ids"]) for i in range(len(ids))] == row.mask


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_and_gradients_equal_trl(models, loss_type):
    tok, ref, policy, root = models
    their_loss, their_grads, _ = trl_loss_and_grads(root, loss_type)
    our_loss, our_grads, _ = lmforge_loss_and_grads(tok, ref, policy, loss_type)
    assert our_loss == pytest.approx(their_loss, abs=1e-5)
    assert their_loss > 0 and set(our_grads) == set(their_grads)
    for name, g in their_grads.items():
        assert g.abs().sum() > 0, name  # every weight gets a gradient: the comparison is not vacuous
        torch.testing.assert_close(our_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)
