"""The stage registry (issue 15 part 4): one ordered list drives the chain, `skip`, stats and report;
a new filter is a Stage subclass plus one line; per-source skips; the shipped bad-words data file;
the tqdm progress of curation jobs."""

from __future__ import annotations

import copy
import json
import re
import string
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.config import from_dict
from lmforge.data.curate import stages
from lmforge.data.curate.badwords import bad_words
from lmforge.data.curate.config import SKIPPABLE, CurateConfig, StageConfig
from lmforge.data.curate.executors import run_jobs
from lmforge.data.curate.pipeline import curate
from lmforge.data.curate.shards import read_shard, shard_files
from lmforge.data.curate.stage import Item, Stage
from lmforge.data.curate.stats import Stats
from lmforge.errors import ConfigError, LmforgeError

pytest.importorskip("ftfy", reason="needs the curate extra: pip install 'lmforge[curate]'")

ROOT = Path(__file__).resolve().parents[1]
# Stages that need nothing loaded from disk or the network: the per-document tests build them directly.
LOCAL = {"decontamination": {"enabled": False}, "lang_id": {"enabled": False}}
PAGE = (
    "The river and the garden have windows with candles of silver thunder. "
    "A teacher walked to the market in the winter and bought an orange bottle. "
    "Rabbits ran across the meadow while the lantern in my pocket kept burning.\n"
    "Every village near the harbor has a saddle maker, a hammer smith and a pepper seller. "
    "The mountain forest is quiet at night and the ladder leans on the old basket."
)


def cfg_of(**tree) -> CurateConfig:
    cfg = from_dict(CurateConfig, tree)
    cfg.validate()
    return cfg


def test_one_list_names_the_stages_everywhere():
    names = [s.name for s in stages.STAGES]
    assert len(set(names)) == len(names)
    assert tuple(names) == SKIPPABLE  # the CurateConfig StageConfig fields, in run order
    for name in names:
        assert isinstance(getattr(CurateConfig(), name), StageConfig), name
    order = stages.run_order()
    assert order[0] == "read" and order[1 : 1 + len(names)] == tuple(names)
    assert order[1 + len(names) :] == ("exact_dedup", "minhash_dedup", "boilerplate")


def test_skip_names_come_from_the_registry():
    with pytest.raises(
        ConfigError, match=r"skip\.books must be a list of stage names from normalize, .*decontamination"
    ):
        cfg_of(skip={"books": ["c4", "c5"]})
    cfg_of(skip={"books": list(SKIPPABLE)})  # every registered stage may be skipped


def test_a_skipped_stage_neither_runs_nor_counts_for_that_source(tmp_path):
    page = PAGE + "\nLorem ipsum dolor sit amet is what the template says here."
    cfg = cfg_of(**LOCAL, skip={"books": ["c4"]})
    pipe = stages.DocPipeline(cfg, tmp_path)
    stats = Stats()
    web = {"id": "w", "text": page, "source": "web", "meta": {}}
    book = {"id": "b", "text": page, "source": "books", "meta": {}}
    assert pipe(web, stats) == "c4:lorem_ipsum"
    assert pipe(book, stats) is None
    assert stats.stages["c4"] == {
        "in": 1
    }  # only the web page reached C4; removal is counted by Stats.removed
    assert stats.stages["fineweb"] == {"in": 1} and stats.stages["pii"] == {"in": 1}
    assert pipe.chain("books") is pipe.chain("books")  # per-source chains are built once


class NoDigits(Stage):
    """A filter written for the test: documents with a digit go. Needs no options."""

    name = "no_digits"

    def __init__(self, cfg: CurateConfig, work: Path):
        self.seen = 0

    @classmethod
    def wanted(cls, cfg: CurateConfig) -> bool:
        return True

    def __call__(self, item: Item, stats: Stats) -> str | None:
        self.seen += 1
        stats.counters["no_digits"]["checked"] += 1
        return "has_digits" if any(c.isdigit() for c in item.text) else None


def test_a_new_filter_is_a_class_and_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES[:2], NoDigits, *stages.STAGES[2:]))
    docs = [
        {"id": f"d{i}", "text": PAGE.replace("river", f"river {i}" if i % 3 == 0 else f"river{'s' * i}")}
        for i in range(6)
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    cfg = cfg_of(**LOCAL, workers=1, dedup={"exact": False, "minhash": False})
    stats = curate(cfg, tmp_path / "out", [str(src)])
    assert stats["stages"]["no_digits"] == {"in": 6, "removed": 2}
    assert stats["stages"]["length"] == {"in": 6} and stats["stages"]["gopher_repetition"] == {"in": 4}
    assert stats["counters"]["no_digits"] == {"checked": 6}
    removed = [d for f in shard_files(tmp_path / "out" / "removed") for d in read_shard(f)]
    assert sorted((d["id"], d["reason"]) for d in removed) == [
        ("d0", "no_digits:has_digits"),
        ("d3", "no_digits:has_digits"),
    ]
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    table = report.split("### Stages")[1].split("###")[0]
    rows = [r.split("|")[1].strip() for r in table.splitlines() if re.match(r"\| [a-z_]+ \| \d", r)]
    assert rows[:3] == ["length", "no_digits", "gopher_repetition"]


TEXTS = st.one_of(
    st.text(alphabet=string.ascii_letters + " .,!?\n", max_size=400),
    st.lists(st.sampled_from(PAGE.split(". ")), min_size=0, max_size=12).map(". ".join),
    st.lists(
        st.sampled_from(
            ["Home | About", "Lorem ipsum dolor.", "call +1 415 555 0100", "mail a@b.org", "{ code }", PAGE]
        ),
        max_size=6,
    ).map("\n".join),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=8))
def test_every_stage_sees_exactly_what_the_one_before_kept(tmp_path, texts):
    """For counted stages in registry order: in(next) = in(prev) - removed(prev); reasons name the
    stage that counted the document; running twice gives the same documents and reasons."""
    pipe = stages.DocPipeline(cfg_of(**LOCAL), tmp_path)
    docs = [{"id": str(i), "text": t, "source": "web", "meta": {}} for i, t in enumerate(texts)]
    outcomes = []
    for _ in range(2):
        stats, batch = Stats(), copy.deepcopy(docs)
        reasons = []
        for d in batch:
            reason = pipe(d, stats)
            if reason:
                stats.removed("web", reason, d)
            reasons.append(reason)
        outcomes.append((reasons, batch))
    reasons = outcomes[0][0]
    assert outcomes[0] == outcomes[1]
    counted = [s.name for s in pipe.stages if s.counted]
    seen = len(docs)
    for name in counted:
        got = stats.stages.get(name, {})
        assert got.get("in", 0) == seen, (name, dict(stats.stages))
        seen -= got.get("removed", 0)
    assert seen == reasons.count(None)
    assert all(r is None or r.split(":")[0] in counted for r in reasons)


def test_item_view_follows_the_text():
    item = Item({"id": "x", "text": "a b\nc", "meta": {}})
    view = item.view
    assert item.view is view and view.lines == ["a b", "c"]
    item.text = "d"
    assert item.view is not view and item.view.lines == ["d"] and item.doc["text"] == "d"
    assert item.normalized == "a b\nc"  # only the normalize stage moves it


def test_bad_words_ship_as_a_data_file():
    words = bad_words("en")
    assert len(words) == 403 and words[0] == "2g1c" and words[-1] == "🖕"  # LDNOOBW en, commit 5faf2ba
    assert "2 girls 1 cup" in words and not any(w.startswith("#") or w != w.strip() for w in words)
    with pytest.raises(LmforgeError, match="no bad-words list for language 'xx'"):
        bad_words("xx")
    # every data file beside the curation code is matched by the package-data globs, so wheels carry it
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "lmforge"
    ]
    curate_dir = ROOT / "lmforge" / "data" / "curate"
    data = [p for p in curate_dir.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert any(p.name == "badwords_en.txt" for p in data)
    for p in data:
        rel = p.relative_to(ROOT / "lmforge").as_posix()
        assert any(fnmatch(rel, g) for g in globs), f"{rel} is not in [tool.setuptools.package-data]"


def _square(x: int) -> dict:
    return {"x": x * x}


def test_progress_lines_off_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert run_jobs(_square, [(i,) for i in range(5)], "local", 1, "unit") == [{"x": i * i} for i in range(5)]
    out = capsys.readouterr().out.splitlines()
    # tqdm's meter, one plain line (no carriage return) at the end of a short phase: count, rate, ETA
    assert len(out) == 1 and "\r" not in out[0]
    assert re.fullmatch(
        r"\[curate\] unit \(1 process\): 100% 5/5 \[00:00<00:00, .*(job/s|s/job)\]", out[0]
    ), out
    monkeypatch.setenv("RANK", "1")  # a non-zero rank prints nothing
    run_jobs(_square, [(1,), (2,)], "local", 2, "unit")
    assert capsys.readouterr().out == ""
