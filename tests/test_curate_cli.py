"""`lmforge curate` as the CLI mounts it, recipes, and the quality classifier on the DCLM labels."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import needs_shared, shared_path

from lmforge.data.curate.cli import add_parser, load_curate_config, recipe_names, run
from lmforge.data.curate.report import report_section
from lmforge.errors import ConfigError, LmforgeError

pytest.importorskip("ftfy", reason="needs the curate extra: pip install 'lmforge[curate]'")
pytest.importorskip("fasttext", reason="needs the curate extra (fasttext-predict)")

WEB = shared_path("corpora/web")


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lmforge")
    add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["curate", *argv])


def test_every_curation_recipe_parses():
    assert {"fineweb", "c4"} <= set(recipe_names())
    for name in recipe_names():
        load_curate_config(name, [])
    fw = load_curate_config("fineweb", ["c4.min_sentences=4"])
    assert (fw.c4.min_words_per_line, fw.c4.min_sentences, fw.c4.terminal_punct) == (3, 4, False)


def test_config_mistakes_name_the_key(tmp_path):
    with pytest.raises(
        ConfigError, match="gopher_quality.min_doc_wrds.*did you mean 'gopher_quality.min_doc_words'"
    ):
        load_curate_config(None, ["gopher_quality.min_doc_wrds=10"])
    with pytest.raises(ConfigError, match="lang_id.min_score"):
        load_curate_config(None, ["lang_id.min_score=3"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("curate:\n  dedup:\n    bands: 20\n    rows: 5\n")  # a run recipe's curate: section
    cfg = load_curate_config(str(recipe), ["curate.dedup.rows=6"])
    assert (cfg.dedup.bands, cfg.dedup.rows) == (20, 6)


def test_cli_run_prints_where_outputs_went(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    page = " ".join(f"Sentence number {i} tells the reader about the weather and the sea." for i in range(12))
    src.write_text("\n".join(json.dumps({"text": page + f" Page {k}."}) for k in range(4)) + "\nnot json\n")
    assert (
        run(
            parse(
                "--input", str(src), "--output", str(tmp_path / "out"), "--workers", "1", "c4.enabled=false"
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "5 documents in" in out and "read:malformed_json" in out and "report.md" in out
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert "## Data curation" in report_section(stats)
    with pytest.raises(LmforgeError, match="different config"):
        run(parse("--input", str(src), "--output", str(tmp_path / "out"), "c4.enabled=true"))


@needs_shared("corpora/web")
def test_quality_classifier_on_dclm_labels(tmp_path):
    pytest.importorskip("sklearn")
    from lmforge.data.curate.classifier import QualityClassifier, train_classifier
    from lmforge.data.curate.classifier_training import read_texts

    texts, labels = read_texts([str(WEB / "dclm_majority_data.jsonl")], label_field="label")
    clf = train_classifier(texts, labels, n_features=2**16, holdout=0.25)
    m = clf.metrics
    assert m["heldout"] == len(texts) // 4 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert m["accuracy"] > 0.55  # better than the majority class on held-out human labels
    clf.save(tmp_path / "q.npz")
    again = QualityClassifier.load(tmp_path / "q.npz")
    assert again.score(texts[:5]).tolist() == pytest.approx(clf.score(texts[:5]).tolist())
    # the pipeline scores with the saved classifier and reports agreement with the labels
    run(
        parse(
            "--input",
            str(WEB / "dclm_agreement_data.jsonl"),
            "--output",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "classifier.enabled=true",
            f"classifier.model={tmp_path / 'q.npz'}",
            "label_field=label",
            "dedup.minhash=false",
        )
    )
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["resources"]["classifier"]["heldout"] > 0
    assert (
        "kept" in stats["labels"]
        and "Agreement with the human quality labels" in (tmp_path / "out" / "report.md").read_text()
    )
    assert (tmp_path / "out" / "classifier.npz").exists()


def test_classifier_trained_from_recipe_sets(tmp_path):
    pytest.importorskip("sklearn")
    good = [
        f"The committee published a detailed report on the history of river {i} and its bridges."
        for i in range(30)
    ]
    bad = [f"CLICK HERE buy cheap pills now {i} best price free shipping win win win" for i in range(30)]
    (tmp_path / "pos.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in good))
    (tmp_path / "neg.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in bad))
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"text": good[0]}) + "\n" + json.dumps({"text": bad[0]}) + "\n"
    )
    run(
        parse(
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "lang_id.enabled=false",
            "gopher_quality.enabled=false",
            "gopher_repetition.enabled=false",
            "c4.enabled=false",
            "fineweb.enabled=false",
            "classifier.enabled=true",
            f"classifier.positive=[{tmp_path / 'pos.jsonl'}]",
            f"classifier.negative=[{tmp_path / 'neg.jsonl'}]",
            "classifier.n_features=4096",
        )
    )
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["resources"]["classifier"]["f1"] == 1.0
    assert list(stats["sources"]["unknown"]["removed"]) == ["classifier:score"]


HEURISTICS_OFF = [
    f"{s}.enabled=false" for s in ("lang_id", "gopher_repetition", "gopher_quality", "c4", "fineweb")
]


def test_cli_encodes_the_kept_documents_into_shards(tmp_path, capsys):
    import random

    from lmforge.data.shards import load_meta
    from lmforge.tiny import tiny_tokenizer

    src = tmp_path / "in.jsonl"
    words = [
        "river",
        "mountain",
        "forest",
        "window",
        "garden",
        "teacher",
        "market",
        "village",
        "silver",
        "winter",
        "orange",
        "bottle",
    ]
    pages = []
    for k in range(6):  # distinct pages (no near-duplicates), then two exact copies
        rng = random.Random(k)
        pages.append(" ".join(" ".join(rng.sample(words, 8)) + "." for _ in range(12)))
    src.write_text(
        "\n".join(json.dumps({"id": f"p{k}", "text": t}) for k, t in enumerate(pages + pages[:2])) + "\n"
    )
    tok = tiny_tokenizer(vocab_size=300)
    tok.save(tmp_path / "tokenizer.json")
    out = tmp_path / "out"
    with pytest.raises(LmforgeError, match="--shards needs --tokenizer"):
        run(parse("--input", str(src), "--output", str(out), "--shards", str(tmp_path / "s")))
    with pytest.raises(LmforgeError, match="no such file"):
        run(parse("--input", str(src), "--output", str(out), "--tokenizer", str(tmp_path / "missing.json")))
    assert not out.exists()  # both refused before any work
    assert (
        run(
            parse(
                "--input",
                str(src),
                "--output",
                str(out),
                "--workers",
                "1",
                "--tokenizer",
                str(tmp_path / "tokenizer.json"),
                *HEURISTICS_OFF,
            )
        )
        == 0
    )
    assert "shards:" in capsys.readouterr().out
    meta = load_meta(out / "shards")
    stats = json.loads((out / "stats.json").read_text())
    docs = sum(s["documents"] for s in meta["splits"].values())
    assert docs == 6 and meta["tokenizer_hash"] == tok.hash  # the 2 exact duplicates are gone
    assert "exact_dedup" in json.dumps(stats)
    expected = sum(len(tok.encode(t)) + 1 for t in pages)  # + one end-of-text per document
    assert sum(s["tokens"] for s in meta["splits"].values()) == expected
    with pytest.raises(LmforgeError, match="already holds token shards"):
        run(parse("--input", str(src), "--output", str(out), "--tokenizer", str(tmp_path / "tokenizer.json")))
    with pytest.raises(LmforgeError, match="kept no documents"):
        run(
            parse(
                "--input",
                str(src),
                "--output",
                str(tmp_path / "none"),
                "--workers",
                "1",
                "--tokenizer",
                str(tmp_path / "tokenizer.json"),
                "length.min_chars=1000000",
            )
        )
