"""The "Inside the model" section `lmforge run` adds to report.md: the seed's two sentences as
pictures (and their JSON) under <run>/inside/, every link in the section pointing at a file."""

from __future__ import annotations

import json
import re

from lmforge.inspect.report import SECTION, SENTENCES, inside_the_model
from lmforge.report import read_report_section, update_report_section
from lmforge.tiny import make_tiny_run


def test_section_links_pictures_that_exist(tmp_path):
    run = make_tiny_run(tmp_path / "run", block_size=48)
    update_report_section(run, SECTION, inside_the_model(run))
    body = read_report_section(run, SECTION)
    links = re.findall(r"\]\(([^)]+\.png)\)", body)
    assert len(links) == 5 and all((run / link).is_file() for link in links)
    assert all((run / link).with_suffix(".json").is_file() for link in links)
    for sentence in SENTENCES:
        assert repr(sentence) in body
    surprise = json.loads((run / "inside" / "second" / "surprise.json").read_text())
    assert surprise["text"] == SENTENCES[1]
    assert "| embed |" in body and "| block 1 |" in body  # the lens table
    assert not list((run / "inside" / "attention").glob("L*_H*.png"))  # per-head maps: only on request


def test_a_model_too_short_for_the_sentences_gets_a_note_not_a_crash(tmp_path):
    run = make_tiny_run(tmp_path / "short", block_size=4)
    assert inside_the_model(run).startswith("Not drawn: the text is ")
