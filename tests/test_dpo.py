"""DPO (issue 17 parts 2 and 4): the losses, the reply-only log-probs, the three references
(frozen copy, precomputed, LoRA adapters off), and DPO on the pre-training loop: per-step
metrics, accumulation = batch splitting, SIGTERM/SIGKILL resume step for step, two FSDP
processes = one, and a demo-sized model learning a clear preference rule to >= 90% held-out
accuracy."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.chat.template import encode_chat
from lmforge.config import RunConfig, from_dict
from lmforge.errors import ConfigError, LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.tiny import tiny_tokenizer
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import latest_checkpoint, load_model, save_checkpoint
from lmforge.tune.config import DpoConfig, FinetuneConfig, LoraConfig
from lmforge.tune.dpo import pair_losses, sequence_logps
from lmforge.tune.dpo_demo import split, synthetic_pairs
from lmforge.tune.dpo_source import (
    DpoObjective,
    DpoSource,
    collate_pairs,
    encode_pairs,
    encode_reply,
    frozen_reference,
)
from lmforge.tune.dpo_train import dpo_finetune
from lmforge.tune.lora import adapters_disabled, apply_lora
from lmforge.tune.prefs import PreferencePair

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 420  # a hang fails instead of blocking CI
WORDS = ["red", "blue", "green", "apple", "tree", "sky", "dog", "cat", "sun", "moon", "fish", "bird"]


def word_pairs() -> list[PreferencePair]:
    """Chosen replies end in "yes", rejected ones in "no no" (rows of unequal length)."""
    return [
        PreferencePair(
            prompt=[{"role": "user", "content": f"say {w}"}],
            chosen=f"{w} {v} yes",
            rejected=f"{w} {v} no no",
            line=i + 1,
        )
        for i, (w, v) in enumerate((w, v) for w in WORDS for v in WORDS[:2])
    ]


# ---------------------------------------------------------------- the objective


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 0), min_size=4, max_size=4), st.floats(0.01, 1.0), st.floats(-20, 20))
def test_sigmoid_loss_is_dpo_and_shift_invariant(logps, beta, shift):
    """Eq. 7 of Rafailov et al.: -log s(beta * ((pc - rc) - (pr - rr))); adding the same constant to a
    reply's policy and reference log-probs (e.g. a shared prefix) changes nothing."""
    pc, pr, rc, rr = (torch.tensor([x], dtype=torch.float64) for x in logps)
    s = pair_losses(pc, pr, rc, rr, beta=beta)
    want = -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
    torch.testing.assert_close(s.loss, want)
    torch.testing.assert_close(pair_losses(pc + shift, pr, rc + shift, rr, beta=beta).loss, want)
    torch.testing.assert_close(s.chosen_rewards, beta * (pc - rc))
    smoothed = pair_losses(pc, pr, rc, rr, beta=beta, label_smoothing=0.2).loss  # cDPO
    torch.testing.assert_close(smoothed, 0.8 * want + 0.2 * -F.logsigmoid(-beta * ((pc - rc) - (pr - rr))))


def test_equal_policy_and_reference_give_log_two_and_zero_rewards():
    x = torch.tensor([-3.0, -7.0])
    s = pair_losses(x, x - 1, x, x - 1, beta=0.5)
    torch.testing.assert_close(s.loss, torch.full((2,), math.log(2)))
    assert not s.chosen_rewards.any() and not s.rejected_rewards.any()


def test_ipo_averages_log_ratios_per_token():
    s = pair_losses(
        torch.tensor([-4.0]),
        torch.tensor([-9.0]),
        torch.tensor([-5.0]),
        torch.tensor([-6.0]),
        beta=0.25,
        loss="ipo",
        chosen_tokens=torch.tensor([2]),
        rejected_tokens=torch.tensor([3]),
    )
    torch.testing.assert_close(s.loss, torch.tensor([((1 / 2 - (-3) / 3) - 1 / (2 * 0.25)) ** 2]))
    with pytest.raises(ValueError):
        pair_losses(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.1, loss="ipo")


def test_dpo_settings_are_checked():
    for bad in (
        DpoConfig(beta=0),
        DpoConfig(label_smoothing=0.5),
        DpoConfig(loss="ipo", label_smoothing=0.1),
    ):
        with pytest.raises(ConfigError):
            bad.validate()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(
        [" ".join(WORDS + ["say", "yes", "no", "again"]) * 50],
        TokenizerConfig(vocab_size=300, min_frequency=2),
    )


def tiny(tok, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(
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
        )
    )


def test_only_the_final_reply_is_scored(tok):
    """Through the chat template: the prompt (an earlier assistant turn included) carries no target;
    the reply's tokens and its closing <|end|> do."""
    prompt = [
        {"role": "user", "content": "say sky"},
        {"role": "assistant", "content": "sky"},
        {"role": "user", "content": "again"},
    ]
    ex = encode_reply(prompt, "sky yes", tok)
    prompt_ids = encode_chat(prompt, tok, add_generation_prompt=True)[0]
    assert ex.ids[: len(prompt_ids)] == prompt_ids and ex.ids[-1] == tok.end_id
    assert ex.mask == [False] * len(prompt_ids) + [True] * (len(ex.ids) - len(prompt_ids))
    assert tok.decode(ex.ids[len(prompt_ids) : -1]) == "sky yes"


def test_sequence_logps_sum_the_reply_tokens(tok):
    model = tiny(tok).eval()
    enc, _, _ = encode_pairs(word_pairs()[:3], tok, seq_len=48, overlong="truncate")
    batch = collate_pairs(enc, tok.pad_id)
    logits, _ = model(batch["input_ids"])
    logps, counts = sequence_logps(logits, batch["targets"])
    for row, ex in enumerate([p.chosen for p in enc] + [p.rejected for p in enc]):
        alone, _ = model(torch.tensor([ex.ids[:-1]]))  # unpadded: padding on the right changes nothing
        lp = torch.log_softmax(alone[0], -1)
        want = sum(lp[t, ex.ids[t + 1]] for t in range(len(ex.ids) - 1) if ex.mask[t + 1])
        torch.testing.assert_close(logps[row], want, atol=1e-5, rtol=1e-5)
        assert counts[row] == sum(ex.mask[1:])


def test_overlong_pairs_are_cut_or_dropped(tok):
    pairs = word_pairs()[:2]
    kept, truncated, dropped = encode_pairs(pairs, tok, seq_len=9, overlong="truncate")
    assert truncated == 2 and dropped == 0 and all(len(p.chosen.ids) == 10 for p in kept)
    assert encode_pairs(pairs, tok, seq_len=9, overlong="drop")[:3:2] == ([], 2)
    assert encode_pairs(pairs, tok, seq_len=5, overlong="truncate")[2] == 2  # nothing of the reply is left


def test_lora_reference_is_the_base_with_adapters_off(tok):
    base = tiny(tok).eval()
    model = tiny(tok).eval()
    apply_lora(model, LoraConfig(rank=2, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # a trained adapter: the model now differs from its base
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    assert not torch.allclose(model(ids)[0], base(ids)[0])
    with adapters_disabled(model):
        torch.testing.assert_close(model(ids)[0], base(ids)[0])
    assert not torch.allclose(model(ids)[0], base(ids)[0])  # back on after the block


def test_source_resumes_and_rejects_other_data(tok):
    enc, _, _ = encode_pairs(word_pairs(), tok, seq_len=48, overlong="truncate")
    objective = DpoObjective(frozen_reference(tiny(tok)), 0.1, "sigmoid", 0.0)
    a = DpoSource(enc, objective, tok.pad_id, seed=3)
    for step in range(5):  # past the end of an epoch (24 pairs)
        a.next_batch(7, step, 0)
    b = DpoSource(enc, objective, tok.pad_id, seed=3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.next_batch(4, 5, 0)["input_ids"], b.next_batch(4, 5, 0)["input_ids"])
    with pytest.raises(LmforgeError, match="preference data changed"):
        DpoSource(enc[:-1], objective, tok.pad_id, seed=3).load_state_dict(a.state_dict())
    ranks = [
        DpoSource(enc, objective, tok.pad_id, seed=3, dp_rank=r, dp=2).next_batch(3, 0, 0) for r in (0, 1)
    ]
    one = DpoSource(enc, objective, tok.pad_id, seed=3).next_batch(6, 0, 0)
    assert sorted(ranks[0]["pair_index"].tolist() + ranks[1]["pair_index"].tolist()) == sorted(
        one["pair_index"].tolist()
    )
    assert int(ranks[0]["step_tokens"]) == int(one["step_tokens"]) == 6  # the global micro-batch's pairs


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4))  # at most 24 pairs: word_pairs() has 24
def test_pair_weighted_gradient_does_not_depend_on_the_split(tok, sizes):
    """The loop's token-weighted step: each micro-batch's summed pair losses over the step's pairs.
    Any split of the same pairs into micro-batches (of unequal padded lengths) gives one gradient."""
    enc, _, _ = encode_pairs(word_pairs()[: sum(sizes)], tok, seq_len=48, overlong="truncate")
    assert len(enc) == sum(sizes)
    ref = frozen_reference(tiny(tok, seed=1))

    def grads(parts: list[int]) -> list[torch.Tensor]:
        model = tiny(tok)
        objective = DpoObjective(ref, 0.1, "sigmoid", 0.0)
        at = 0
        for n in parts:
            (objective(model, collate_pairs(enc[at : at + n], tok.pad_id)) / len(enc)).backward()
            at += n
        return [p.grad for p in model.parameters()]

    for a, b in zip(grads([len(enc)]), grads(sizes)):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- on the training loop


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("dpo")
    cfg = RunConfig(name="base", out_dir=str(root))
    model = tiny(tok)
    cfg.model = model.cfg
    run = root / "base"
    run.mkdir()
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, model, {}, {"step": 0}, cfg, keep_last=1)
    return run


def settings_for(run: Path, out: Path, **kw) -> dict:
    return {
        "init": str(run),
        "data": "word pairs",
        "out": str(out),
        "objective": "dpo",
        "max_steps": 6,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 1,
        "eval_every": 0,
        "log_every": 1,
        "ckpt_every": 0,
        "device": "cpu",
        "precision": "fp32",
        "chat_prompts": [],
        **kw,
    }


def run_dpo(run: Path, out: Path, **kw):
    pairs = word_pairs()
    return dpo_finetune(
        from_dict(FinetuneConfig, settings_for(run, out, **kw)),
        log=lambda m: None,
        pairs=(pairs[:18], pairs[18:]),
    )


def train_rows(out: Path) -> list[dict]:
    return [
        r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"
    ]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_model(out)[0].state_dict()


def test_dpo_run_logs_step_metrics_and_held_out_figures(base_run, tmp_path):
    r = run_dpo(base_run, tmp_path / "out")
    rows = train_rows(tmp_path / "out")
    assert len(rows) == 6 and rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference
    for key in (
        "reward_margin",
        "pref_accuracy",
        "reward_chosen",
        "reward_rejected",
        "logp_chosen",
        "logp_rejected",
    ):
        assert all(math.isfinite(row[key]) for row in rows), key
    assert rows[0]["pref_accuracy"] == 0.0 and rows[-1]["pref_accuracy"] > 0.5
    assert rows[-1]["reward_margin"] > 0 and rows[-1]["loss"] < rows[0]["loss"]
    assert r.val_before["loss"] == pytest.approx(math.log(2)) and r.val_before["pref_accuracy"] == 0.0
    assert r.val_after["pref_accuracy"] > 0.5 and r.val_after["loss"] < r.val_before["loss"]
    saved = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert saved["val_after"] == r.val_after and saved["objective"] == "dpo"
    assert latest_checkpoint(tmp_path / "out") is not None  # a run directory every command loads


def test_precomputed_reference_trains_as_the_frozen_copy(base_run, tmp_path):
    run_dpo(base_run, tmp_path / "model")
    run_dpo(base_run, tmp_path / "pre", dpo={"ref": "precomputed"})
    assert (tmp_path / "pre" / "train" / "ref_logps.pt").exists()
    a, b = train_rows(tmp_path / "model"), train_rows(tmp_path / "pre")
    assert [x["loss"] for x in b] == pytest.approx([x["loss"] for x in a], abs=1e-5)
    assert [x["reward_margin"] for x in b] == pytest.approx([x["reward_margin"] for x in a], abs=1e-5)


@pytest.mark.parametrize("split_", [(2, 2), (1, 4), (3, 1)], ids=["2x2", "1x4", "3x1-neighbour"])
def test_accumulation_is_batch_splitting(base_run, tmp_path, split_):
    """batch_size x grad_accum = 4 pairs in any split gives the same step: every pair weighs the same.
    A neighbour (3 pairs a step) must differ, so the comparison can fail."""
    bs, ga = split_
    ref = tmp_path / "one"
    run_dpo(base_run, ref, max_steps=4)
    run_dpo(base_run, tmp_path / "split", max_steps=4, batch_size=bs, grad_accum=ga)
    same = bs * ga == 4
    a, b = [x["loss"] for x in train_rows(ref)], [x["loss"] for x in train_rows(tmp_path / "split")]
    w1, w2 = weights(ref), weights(tmp_path / "split")
    if same:
        assert b == pytest.approx(a, abs=1e-6)
        for name in w1:
            torch.testing.assert_close(w2[name], w1[name], atol=1e-6, rtol=1e-5)
    else:
        assert any(abs(x - y) > 1e-4 for x, y in zip(a[1:], b[1:]))


def test_lora_dpo_starts_at_the_base_and_saves_a_merged_model(base_run, tmp_path):
    r = run_dpo(base_run, tmp_path / "lora", method="lora", lr=1e-2, lora={"rank": 2, "dropout": 0.0})
    rows = train_rows(tmp_path / "lora")
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # adapters off = on at the start (B = 0)
    assert rows[-1]["loss"] < rows[0]["loss"] and r.trainable_params < r.total_params / 5
    assert (tmp_path / "lora" / "lora" / "adapter.safetensors").exists()


# ---------------------------------------------------------------- resume and torchrun (own processes)


WORKER = textwrap.dedent("""
    import json, os, sys
    from lmforge.config import from_dict
    from lmforge.tune.config import FinetuneConfig
    from lmforge.tune.dpo_source import DpoSource
    from lmforge.tune.dpo_train import dpo_finetune
    from lmforge.tune.prefs import PreferencePair

    cfg = from_dict(FinetuneConfig, json.loads(sys.argv[1]))
    pairs = [PreferencePair(**p) for p in json.loads(sys.argv[2])]
    sig, at = json.loads(sys.argv[3]) if len(sys.argv) > 3 else (0, -1)
    draw = DpoSource.next_batch

    def next_batch(self, rows, step, micro):
        if step == at and micro == 0:  # the signal arrives while step `at` + 1 is being computed
            os.kill(os.getpid(), sig)
        return draw(self, rows, step, micro)

    DpoSource.next_batch = next_batch
    r = dpo_finetune(cfg, log=lambda m: None, pairs=(pairs[:18], pairs[18:]))
    print("RESULT " + json.dumps({"stopped": r.stopped, "steps": r.steps}))
""")


def run_worker(tmp: Path, cfg: dict, signal_at=None, nproc: int = 1):
    script = tmp / "worker.py"
    script.write_text(WORKER)
    pairs = [
        {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "line": p.line} for p in word_pairs()
    ]
    args = [str(script), json.dumps(cfg), json.dumps(pairs)] + ([json.dumps(signal_at)] if signal_at else [])
    launcher = [sys.executable] + (
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    return subprocess.run(
        launcher + args, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False
    )


def result(proc) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(proc.stdout.split("RESULT ")[-1].splitlines()[0])


@pytest.mark.parametrize(
    "variant",
    [{"dpo": {"ref": "precomputed"}}, {"method": "lora", "lr": 1e-2, "lora": {"rank": 2, "dropout": 0.1}}],
    ids=["precomputed", "lora-dropout"],
)
def test_sigterm_then_sigkill_resumes_step_for_step(base_run, tmp_path, variant):
    """Precomputed reference log-probs are reloaded, not recomputed from a half-trained model; LoRA's
    adapter dropout needs the random generators restored."""
    ref = tmp_path / "ref"
    assert (
        result(run_worker(tmp_path, settings_for(base_run, ref, max_steps=8, **variant)))["stopped"] is None
    )
    out = tmp_path / "cut"
    cfg = settings_for(base_run, out, max_steps=8, ckpt_every=4, **variant)
    stopped = result(run_worker(tmp_path, cfg, (signal.SIGTERM, 2)))  # saved at the end of step 3
    assert "interrupted by SIGTERM at step 3/8" in stopped["stopped"]
    killed = run_worker(tmp_path, cfg, (signal.SIGKILL, 5))  # resumed at 3, saved at 4, killed in step 6
    assert killed.returncode == -signal.SIGKILL
    assert result(run_worker(tmp_path, cfg))["steps"] == 8
    assert [r["loss"] for r in train_rows(out)] == [r["loss"] for r in train_rows(ref)]
    assert [r["reward_margin"] for r in train_rows(out)] == [r["reward_margin"] for r in train_rows(ref)]
    w_ref, w_out = weights(ref), weights(out)
    for name in w_ref:
        torch.testing.assert_close(w_out[name], w_ref[name], atol=0, rtol=0)


@pytest.mark.slow
def test_two_fsdp_processes_train_as_one(base_run, tmp_path):
    """Each FSDP rank takes every other pair of each global micro-batch: the losses, step metrics,
    held-out figures and weights are one process's."""
    one, two = tmp_path / "one", tmp_path / "two"
    result(run_worker(tmp_path, settings_for(base_run, one, eval_every=3)))
    result(run_worker(tmp_path, settings_for(base_run, two, eval_every=3, parallel={"dp": 2}), nproc=2))
    a, b = train_rows(one), train_rows(two)
    for key in ("loss", "reward_margin", "pref_accuracy", "logp_chosen"):
        assert [x[key] for x in b] == pytest.approx([x[key] for x in a], abs=1e-5), key
    val = [
        [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "val"]
        for d in (one, two)
    ]
    assert len(val[0]) == 2 and [v["step"] for v in val[1]] == [3, 6]
    for key in ("val_loss", "val_pref_accuracy", "val_reward_margin", "val_logp_accuracy"):
        assert [v[key] for v in val[1]] == pytest.approx([v[key] for v in val[0]], abs=1e-5), key
    w1, w2 = weights(one), weights(two)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- it learns (part 4)


def test_demo_model_learns_the_sign_off_rule(tmp_path):
    """The demo's model shape (lmforge/recipes/tiny.yaml) from random weights, the synthetic set of
    lmforge/tune/dpo_demo.py (a reply beats itself plus a stock sign-off): >= 90% held-out
    preference accuracy in ten steps of 8 pairs."""
    tok = tiny_tokenizer(vocab_size=2048)
    mcfg = ModelConfig(
        vocab_size=tok.vocab_size,
        block_size=128,
        n_layer=4,
        n_head=4,
        n_embd=192,
        activation="swiglu",
        norm="rmsnorm",
        pos="rope",
        bias=False,
        tie_embeddings=True,
    )
    torch.manual_seed(0)
    cfg = RunConfig(name="base", out_dir=str(tmp_path))
    cfg.model = mcfg
    (tmp_path / "base").mkdir()
    tok.save(tmp_path / "base" / "tokenizer.json")
    save_checkpoint(tmp_path / "base", 0, Transformer(mcfg), {}, {"step": 0}, cfg, keep_last=1)
    train, val = split(synthetic_pairs(seed=0), 0.15, seed=0)
    ft = FinetuneConfig(
        init=str(tmp_path / "base"),
        data="synthetic",
        out=str(tmp_path / "dpo"),
        objective="dpo",
        max_steps=10,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        eval_every=0,
        log_every=10,
        overlong="drop",
        device="cpu",
        precision="fp32",
        chat_prompts=[],
    )
    r = dpo_finetune(ft, log=lambda m: None, pairs=(train, val))
    assert r.val_pairs >= 30
    assert r.val_before["pref_accuracy"] == 0.0  # ties: the policy is the reference
    assert r.val_after["pref_accuracy"] >= 0.9, r.val_after


def test_run_gains_an_optional_dpo_stage(tmp_path):
    """`lmforge run` with dpo.enabled tunes <run>/sft into <run>/dpo, writes report.md's section, and
    a second run reuses the result; off by default."""
    from lmforge.pipeline import dpo_stage

    tok = tiny_tokenizer(vocab_size=1024, documents=100)
    cfg = RunConfig(name="demo", out_dir=str(tmp_path))
    cfg.model = ModelConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=1, n_embd=32, n_head=2)
    cfg.train.device, cfg.train.precision = "cpu", "fp32"
    assert dpo_stage(cfg) is None and not cfg.dpo.enabled
    torch.manual_seed(0)
    (cfg.run_dir / "sft").mkdir(parents=True)
    tok.save(cfg.run_dir / "sft" / "tokenizer.json")
    save_checkpoint(cfg.run_dir / "sft", 0, Transformer(cfg.model), {}, {"step": 0}, cfg, keep_last=1)
    cfg.dpo.enabled, cfg.dpo.max_steps = True, 2
    first = dpo_stage(cfg)
    assert first["steps"] == 2 and first["val_after"] is not None
    assert latest_checkpoint(cfg.run_dir / "dpo") is not None
    report = (cfg.run_dir / "report.md").read_text()
    assert "Preference tuning (DPO)" in report and "held-out preference accuracy" in report
    assert dpo_stage(cfg)["wall_s"] == first["wall_s"]  # reused, not trained again


def test_finetune_cli_method_dpo(base_run, tmp_path, capsys):
    """`lmforge finetune --method dpo --data prefs.jsonl` (TRL's conversational records, a malformed
    line skipped by number) prints the held-out figures before -> after and saves a run directory."""
    from lmforge.cli import main

    rows = [
        {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in word_pairs()
    ]
    data = tmp_path / "prefs.jsonl"
    data.write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:10])
        + '{"prompt": "x"}\n'
        + "".join(json.dumps(r) + "\n" for r in rows[10:])
    )
    out = tmp_path / "tuned"
    assert (
        main(
            [
                "finetune",
                "--method",
                "dpo",
                "--init",
                str(base_run),
                "--data",
                str(data),
                "--out",
                str(out),
                "max_steps=3",
                "batch_size=4",
                "device=cpu",
                "precision=fp32",
                "val_fraction=0.25",
                "chat_prompts=[]",
                "dpo.loss=ipo",
                "dpo.beta=0.5",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "skipped malformed record prefs.jsonl:11" in text
    assert "held-out preference accuracy" in text and "DPO (ipo, beta 0.5" in text
    saved = json.loads((out / "finetune.json").read_text())
    assert (
        saved["train_pairs"] + saved["val_pairs"] == 24
        and saved["bad_records"] == 1
        and saved["loss"] == "ipo"
    )
    assert load_model(out)[0].cfg == load_model(base_run)[0].cfg
