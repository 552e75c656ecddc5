"""The perplexity filter against a real reference model: `lmforge serve` on loopback, a tiny run."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("ftfy", reason="needs the curate extra: pip install 'lmforge[curate]'")

import torch
import torch.nn.functional as F

from lmforge.config import from_dict
from lmforge.data.curate.config import CurateConfig, PerplexityConfig
from lmforge.data.curate.perplexity import PerplexityScorer
from lmforge.data.curate.pipeline import curate
from lmforge.data.curate.shards import read_shard, shard_files
from lmforge.errors import ConfigError, LmforgeError
from lmforge.serve.engine import ServedModel
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run

OFF = {s: {"enabled": False} for s in ("lang_id", "gopher_quality", "gopher_repetition", "c4", "fineweb")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = ServedModel.load(
        f"ref={make_tiny_run(tmp_path_factory.mktemp('ref') / 'run', seed=3, block_size=64)}"
    )
    with RunningServer(create_app([model])) as srv:
        yield model, f"{srv.url}/v1"


def perplexity_in_process(model: ServedModel, text: str) -> float:
    ids = model.text_ids(text)
    with torch.no_grad():
        logits, _ = model.model(torch.tensor([ids[:-1]]))
    return math.exp(F.cross_entropy(logits[0], torch.tensor(ids[1:])).item())


def test_scores_equal_the_models_own_perplexity(reference):
    model, url = reference
    score = PerplexityScorer(PerplexityConfig(enabled=True, endpoint=url))
    assert score.model == "ref"  # the endpoint's first model
    for text in ("the cat sat on the mat", "zq xv 9931 ## ]] kk"):
        assert score(text) == pytest.approx(perplexity_in_process(model, text), rel=1e-4)
    assert score("a") is None  # one token: nothing to predict
    # longer than the 64-token context: the scorer halves the text until it fits
    long = " ".join(["the weather by the sea was calm and the boats came home"] * 40)
    assert score(long) is not None


def test_curation_records_and_filters_by_perplexity(reference, tmp_path):
    model, url = reference
    docs = {
        "plain": "the cat sat on the mat and the dog sat by the door",
        "noise": "zq xv 9931 ## ]] kk qq 77 zz ;; xv 1234 ~~ pp",
    }
    ppl = {k: perplexity_in_process(model, v) for k, v in docs.items()}
    assert ppl["plain"] != ppl["noise"]
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    limit = (ppl["plain"] + ppl["noise"]) / 2
    cfg = from_dict(
        CurateConfig,
        {**OFF, "workers": 1, "perplexity": {"enabled": True, "endpoint": url, "max_perplexity": limit}},
    )
    stats = curate(cfg, tmp_path / "out", [str(src)])
    kept = [d for f in shard_files(tmp_path / "out" / "kept") for d in read_shard(f)]
    removed = [d for f in shard_files(tmp_path / "out" / "removed") for d in read_shard(f)]
    low, high = sorted(docs, key=ppl.get)
    assert [d["id"] for d in kept] == [low] and [(d["id"], d["reason"]) for d in removed] == [
        (high, "perplexity:too_high")
    ]
    assert kept[0]["meta"]["perplexity"] == pytest.approx(ppl[low], rel=1e-3)
    assert stats["stages"]["perplexity"] == {"in": 2, "removed": 1}


def test_bad_endpoints_fail_clearly(tmp_path):
    """No endpoint, an unreachable one, and one that answers without log-probabilities."""
    import http.server
    import threading

    class NoLogprobs(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.dumps({"choices": [{"text": "x", "logprobs": None}], "usage": {"prompt_tokens": 3}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), NoLogprobs)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        scorer = PerplexityScorer(
            PerplexityConfig(enabled=True, endpoint=f"http://127.0.0.1:{srv.server_port}/v1", model="m")
        )
        with pytest.raises(LmforgeError, match="no prompt log-probabilities"):
            scorer("some text to score")
    finally:
        srv.shutdown()
    with pytest.raises(ConfigError, match="perplexity.endpoint"):
        from_dict(CurateConfig, {"perplexity": {"enabled": True}}).validate()
    cfg = PerplexityConfig(enabled=True, endpoint="http://127.0.0.1:9/v1", retries=0, timeout=5)
    with pytest.raises(LmforgeError, match="unreachable"):
        PerplexityScorer(cfg)
