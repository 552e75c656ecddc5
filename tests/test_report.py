"""The run report: training sections, the loss plot, and sections other stages add."""

from __future__ import annotations

import json

import pytest

from lmforge.config import RunConfig, from_dict
from lmforge.errors import LmforgeError
from lmforge.report import read_report_section, update_report_section, write_report

RESULT = {
    "steps": 40,
    "tokens": 40960,
    "final_train_loss": 3.21,
    "val_loss": 3.5,
    "val_ppl": 33.12,
    "val_bpb": 1.234,
    "tokens_per_s": 5120.0,
    "wall_s": 8.0,
    "stopped_early": False,
}


@pytest.fixture
def run_dir(tmp_path):
    rows = [
        {"step": s, "loss": 6.0 - 0.1 * s, "lr": 1e-3, "kind": "train", "tokens": 1024 * s}
        for s in range(1, 41)
    ]
    rows += [{"step": s, "val_loss": 5.0 - 0.03 * s, "val_bpb": 2.0, "kind": "val"} for s in (20, 40)]
    lines = [json.dumps(r) for r in rows] + ['{"step": 41, "loss": 2.']  # a line cut by a crash
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_write_report_has_every_section_and_the_plot(run_dir):
    cfg = RunConfig()
    path = write_report(run_dir, cfg, RESULT, ["Once upon a time", "has ``` backticks"])
    text = path.read_text()
    assert path == run_dir / "report.md"
    for heading in ("## Model", "## Training", "## Loss curve", "## Held-out loss", "## Samples"):
        assert heading in text
    assert f"{cfg.model.num_params():,}" in text  # parameter count, from the config
    assert "FLOPs per token" in text
    assert "5,120 tokens/s" in text and "0:00:08" in text
    assert "3.5000" in text and "33.12" in text and "1.2340" in text  # loss, perplexity, bpb
    assert "![train and validation loss](loss.png)" in text
    assert "````text\nhas ``` backticks\n````" in text  # a fence longer than the sample's backticks
    png = (run_dir / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_training_section_names_the_optimizer_and_schedule(run_dir):
    text = write_report(run_dir, RunConfig(), RESULT, []).read_text()
    assert "| optimizer | AdamW (lr 0.0003, betas (0.9, 0.95), weight decay 0.1), grad clip 1 |" in text
    assert "warmup 100 steps to 0.0003, then cosine decay to 10% of the peak at step 1,000" in text
    cfg = from_dict(
        RunConfig,
        {
            "train": {
                "optimizer": "muon",
                "muon_lr": 0.03,
                "lr": 1e-3,
                "decay": "wsd",
                "min_lr_ratio": 0.0,
                "decay_fraction": 0.25,
                "max_steps": 400,
            }
        },
    )
    text = write_report(run_dir, cfg, RESULT, []).read_text()
    assert (
        "Muon + AdamW: Muon (lr 0.03 at Jordan's scale, Nesterov momentum 0.95, weight decay 0) "
        "on the blocks' matrices; AdamW (lr 0.001, betas (0.9, 0.95), weight decay 0.1) on embeddings"
    ) in text
    assert (
        "WSD (warmup-stable-decay): warmup 100 steps to 0.001 (Muon 0.03), then constant to step 300, then "
        "1-sqrt decay over the last 25% of steps to 0% of the peak at step 400"
    ) in text


def test_write_report_twice_gives_the_same_file(run_dir):
    write_report(run_dir, RunConfig(), RESULT, ["a"])
    first = (run_dir / "report.md").read_text()
    write_report(run_dir, RunConfig(), RESULT, ["a"])
    assert (run_dir / "report.md").read_text() == first


def test_missing_values_and_metrics_show_as_absent(tmp_path):
    text = write_report(tmp_path, RunConfig(), {"steps": 3}, []).read_text()
    assert "n/a" in text and "No losses logged" in text and "No samples." in text
    assert not (tmp_path / "loss.png").exists()


def test_update_section_replaces_in_place_and_is_idempotent(run_dir):
    write_report(run_dir, RunConfig(), RESULT, ["a"])
    update_report_section(run_dir, "Evaluation", "hellaswag: 0.25")
    path = run_dir / "report.md"
    path.write_text(path.read_text() + "\nA note someone added by hand.\n")

    update_report_section(run_dir, "Evaluation", "hellaswag: 0.31")
    once = path.read_text()
    update_report_section(run_dir, "Evaluation", "hellaswag: 0.31")
    assert path.read_text() == once
    assert once.count("## Evaluation") == 1 and "0.25" not in once
    assert read_report_section(run_dir, "Evaluation") == "hellaswag: 0.31"
    assert "A note someone added by hand." in once
    assert once.index("## Samples") < once.index("## Evaluation")  # appended after training's

    update_report_section(run_dir, "Samples", "replaced")  # an earlier section stays where it was
    text = path.read_text()
    assert text.index("## Loss curve") < text.index("## Samples") < text.index("## Evaluation")
    assert read_report_section(run_dir, "Samples") == "replaced"


def test_update_section_errors(tmp_path):
    with pytest.raises(LmforgeError, match="not found"):
        update_report_section(tmp_path / "missing", "Evaluation", "x")
    with pytest.raises(LmforgeError, match="markers"):
        update_report_section(tmp_path, "Evaluation", "<!-- /lmforge:section evaluation -->")
    (tmp_path / "report.md").write_text("# mine\n\n<!-- lmforge:section evaluation -->\n## Evaluation\n")
    with pytest.raises(LmforgeError, match="no end marker"):
        update_report_section(tmp_path, "Evaluation", "x")
    assert (tmp_path / "report.md").read_text().startswith("# mine")  # untouched on failure


def test_model_section_names_the_architecture_options(run_dir):
    plain = write_report(run_dir, RunConfig(), RESULT, []).read_text()
    assert "QK-norm" not in plain and "soft-capped" not in plain
    cfg = from_dict(RunConfig, {"model": {"qk_norm": True, "logit_softcap": 15, "activation": "relu2"}})
    text = write_report(run_dir, cfg, RESULT, []).read_text()
    assert (
        ", QK-norm |" in text and "| output logits | soft-capped at 15 |" in text and "| MLP | relu2," in text
    )
