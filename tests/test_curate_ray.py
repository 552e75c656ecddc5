"""The Ray executor on a local Ray instance started by the test: same output as the process pool."""

from __future__ import annotations

import json

import pytest

from lmforge.config import from_dict
from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.pipeline import curate
from lmforge.data.curate.shards import read_shard, shard_files


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        with open(src / f"part{k}.jsonl", "w") as f:
            for i in range(40):
                words = " ".join(f"word{(i * 7 + j) % 97}" for j in range(60))
                f.write(
                    json.dumps({"text": f"Document {i % 30} of the set. {words}."}) + "\n"
                )  # duplicates across files
    base = {
        "lang_id": {"enabled": False},
        "gopher_quality": {"enabled": False},
        "c4": {"enabled": False},
        "fineweb": {"enabled": False},
        "gopher_repetition": {"enabled": False},
    }
    local = curate(from_dict(CurateConfig, {**base, "workers": 2}), tmp_path / "local", [str(src)])
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        dist = curate(from_dict(CurateConfig, {**base, "executor": "ray"}), tmp_path / "ray", [str(src)])
    finally:
        ray.shutdown()
    assert dist["sources"] == local["sources"] and dist["dedup"] == local["dedup"]
    kept = lambda d: [(x["id"], x["text"]) for f in shard_files(d / "kept") for x in read_shard(f)]
    assert kept(tmp_path / "ray") == kept(tmp_path / "local")
