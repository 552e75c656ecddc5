"""The finetune / synth command lines (as the lead wires them) and `lmforge run`'s SFT stage."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from lmforge.config import RunConfig
from lmforge.errors import ConfigError, LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import save_checkpoint
from lmforge.tune.cli import add_parsers, finetune_config, run_finetune, run_synth
from lmforge.tune.stage import report_section, sft_stage


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tok = train_tokenizer(
        ["What is the capital of France? Paris is. Give me tips. " * 30],
        TokenizerConfig(vocab_size=300, min_frequency=2),
    )
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = RunConfig(name="tiny", out_dir=str(run.parent))
    cfg.model = ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_embd=32, n_head=2)
    cfg.train.device = "cpu"
    torch.manual_seed(0)
    run.mkdir()
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, Transformer(cfg.model), {}, {"step": 0}, cfg, keep_last=1)
    return run, cfg, tok


def parse(argv):
    p = argparse.ArgumentParser(prog="lmforge")
    add_parsers(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def test_config_precedence_and_typos(tmp_path):
    yaml_file = tmp_path / "ft.yaml"
    yaml_file.write_text("init: from_yaml\ndata: d.jsonl\nepochs: 2\nlora:\n  rank: 4\n")
    cfg = finetune_config(
        parse(
            [
                "finetune",
                "-c",
                str(yaml_file),
                "--init",
                "flag",
                "--lora",
                "lora.rank=16",
                "epochs=5",
                "--strict",
            ]
        )
    )
    assert (cfg.init, cfg.data, cfg.epochs, cfg.method, cfg.lora.rank, cfg.on_bad_record) == (
        "flag",
        "d.jsonl",
        5.0,
        "lora",
        16,
        "error",
    )
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        finetune_config(parse(["finetune", "--init", "x", "--data", "y", "epoch=3"]))
    with pytest.raises(ConfigError, match="lora.rank must be positive"):
        finetune_config(parse(["finetune", "--init", "x", "--data", "y", "--lora", "lora.rank=0"]))
    with pytest.raises(ConfigError, match="needs seed tasks"):
        run_synth(parse(["synth", "--out", str(tmp_path / "s.jsonl")]))


def test_finetune_command(run, tmp_path, capsys):
    run_dir, _, _ = run
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"What is {i}?", "response": f"It is {i}."}) + "\n" for i in range(20))
        + '{"prompt": 3, "response": "x"}\n'
    )
    out = tmp_path / "ft"
    assert (
        run_finetune(
            parse(
                [
                    "finetune",
                    "--init",
                    str(run_dir),
                    "--data",
                    str(data),
                    "--out",
                    str(out),
                    "max_steps=3",
                    "log_every=1",
                    "chat_prompts=[Hi]",
                ]
            )
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "d.jsonl:21: field 'prompt' is int, not a string" in text
    assert "trainable parameters:" in text and "held-out loss:" in text and str(out) in text
    with pytest.raises(LmforgeError, match="d.jsonl:21"):
        run_finetune(
            parse(
                [
                    "finetune",
                    "--init",
                    str(run_dir),
                    "--data",
                    str(data),
                    "--out",
                    str(tmp_path / "x"),
                    "--strict",
                ]
            )
        )


def test_sft_stage_and_report(run, capsys):
    run_dir, cfg, tok = run
    result = sft_stage(cfg, run_dir, tok, max_steps=2, eval_every=0, max_new_tokens=4)
    assert result["steps"] == 2 and (run_dir / "sft" / "checkpoints").is_dir()
    assert (
        "chat with the fine-tuned model:\n[finetune] user: What is the capital of France?"
        in capsys.readouterr().out
    )
    md = report_section(result)
    assert md.startswith("Fine-tuned on") and "assistant: " in md and "held-out loss" in md
    from lmforge.report import update_report_section
    from lmforge.tune.stage import SECTION

    report = update_report_section(run_dir, SECTION, md).read_text()
    assert "## Supervised fine-tuning" in report and "user: What is the capital of France?" in report
    again = sft_stage(cfg, run_dir, tok, max_steps=2)  # reused, not retrained
    assert again["wall_s"] == result["wall_s"]
    assert report_section({"skipped": True}) == ""
