"""The one atomic-write helper: a failed write leaves the old file and no temporary behind."""

import numpy as np
import pytest

from lmforge.atomic import write_atomic, write_text_atomic


def test_text_replaces_whole_file(tmp_path):
    path = tmp_path / "a.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new ünïcode")
    assert path.read_text(encoding="utf-8") == "new ünïcode"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("complete")

    def half_write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_write)
    assert path.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_suffix_keeps_the_extension_writers_need(tmp_path):
    path = tmp_path / "ids.npy"
    write_atomic(path, lambda tmp: np.save(tmp, np.arange(5)), suffix=".npy")
    assert np.load(path).tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["ids.npy"]
