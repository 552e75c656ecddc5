"""`lmforge inspect` end to end on saved runs (decoder, encoder, encoder-decoder): every picture
is a real PNG with the numbers behind it in the JSON beside it, and bad input is one line on
stderr with exit status 2 and nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.inspect.attention import attention_maps
from lmforge.inspect.cli import load
from lmforge.tiny import make_tiny_run

A, B = "I hit the baseball with a bat", "I hit the bat with a baseball"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lmforge.model import ModelConfig
    from lmforge.tiny import random_run
    from lmforge.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("runs")
    decoder = make_tiny_run(root / "decoder", block_size=48)
    tok = Tokenizer.load(decoder)
    out = {"decoder": decoder}
    for kind in ("encoder", "encoder-decoder"):
        cfg = ModelConfig(kind=kind, vocab_size=tok.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16)
        out[kind] = random_run(root / kind, tok, cfg)
    return out


def png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_decoder_with_compare_writes_every_picture_and_its_json(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["inspect", "--run", str(runs["decoder"]), A, "--compare", B, "--json", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "bits | " in printed and "| block 1 |" in printed and str(out) in printed
    pictures = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pictures == [
        "attention/L0_decoder_H0.png",
        "attention/L0_decoder_H1.png",
        "attention/L1_decoder_H0.png",
        "attention/L1_decoder_H1.png",
        "attention/heads.png",
        "compare/L0_decoder.png",
        "compare/L1_decoder.png",
        "compare/heads_second.png",
        "lens.png",
        "surprise.png",
    ]
    for p in out.rglob("*.png"):
        assert p.with_suffix(".json").is_file()
        assert png(p).std() > 5  # something drawn
    model, tok = load(runs["decoder"])
    maps = attention_maps(model, tok, A)
    head = json.loads((out / "attention" / "L1_decoder_H0.json").read_text())
    np.testing.assert_allclose(head["probs"], maps[1].probs[0], atol=1e-4)
    assert head["queries"] == maps[1].queries and head["text"] == A
    other = attention_maps(model, tok, B)
    cmp = json.loads((out / "compare" / "L0_decoder.json").read_text())
    np.testing.assert_allclose(cmp["difference"], other[0].probs - maps[0].probs, atol=2e-4)
    assert cmp["second"]["text"] == B
    surprise = json.loads((out / "surprise.json").read_text())
    assert len(surprise["tokens"]) == len(tok.encode(A)) and len(surprise["tokens"][0]["top"]) == 5
    assert (out / "surprise.html").read_text().count('class="tok"') == len(tok.encode(A))
    assert (out / "lens.md").read_text().startswith("| layer |")


@pytest.mark.parametrize(
    "kind,maps", [("encoder", ["L0_encoder"]), ("encoder-decoder", ["L0_cross", "L0_decoder", "L0_encoder"])]
)
def test_encoder_kinds(runs, tmp_path, kind, maps):
    out = tmp_path / kind
    assert main(["inspect", "--run", str(runs[kind]), A, "--out", str(out), "--json", "--top-k", "2"]) == 0
    got = sorted(p.stem.rsplit("_H", 1)[0] for p in (out / "attention").glob("L*_H0.png"))
    assert got == maps
    data = json.loads((out / "attention" / "heads.json").read_text())
    for m in data["maps"]:
        assert np.allclose(np.array(m["probs"]).sum(-1), 1, atol=1e-4)
        if m["stack"] == "cross":
            assert len(m["keys"]) == len(m["queries"]) - 1  # source tokens vs <eot> + target
    assert len(json.loads((out / "lens.json").read_text())["layers"]) == 2


@pytest.mark.parametrize(
    "args,words",
    [
        (["--run", "{run}", "word " * 60], "at most 47"),
        (["--run", "{run}", ""], "empty"),
        (["--run", "{run}", A, "--compare", "word " * 60], "at most 47"),
        (["--run", "{run}", A, "--layers", "7"], "--layers 7"),
        (["--run", "{run}", A, "--top-k", "0"], "--top-k"),
        (["--run", "/nonexistent/run", A], "not found"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, args, words):
    out = tmp_path / "out"
    argv = ["inspect"] + [a.replace("{run}", str(runs["decoder"])) for a in args] + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error:") and words in err and err.count("\n") == 1
    assert not out.exists()
