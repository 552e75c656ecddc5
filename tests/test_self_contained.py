"""A clone of the repository is all a user has: the code cites documents that ship with it, and
tests reach the project's shared data (../shared) only through conftest.shared_path, which skips
them where it is absent (CI also runs those tests with LMFORGE_HIDE_SHARED=1)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cited_documents_are_in_the_repository():
    cited = set()
    for f in (ROOT / "lmforge").rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        assert "shared/notes" not in text and "notes §" not in text, (
            f"{f}: cites notes outside the repository"
        )
        cited |= set(re.findall(r"docs/[\w.-]+\.md", text))
    assert cited >= {"docs/eval-semantics.md", "docs/curation-reference.md"}
    for doc in cited:
        assert (ROOT / doc).is_file(), doc


def test_tests_reach_shared_data_only_through_the_helper():
    pattern = re.compile(r"""parents\[2\]|\.\./shared|["']shared["']|shared/data""")
    for f in sorted((ROOT / "tests").glob("*.py")):
        if f.name in ("conftest.py", Path(__file__).name):
            continue
        code = "\n".join(
            ln
            for ln in f.read_text(encoding="utf-8").splitlines()
            if not ln.lstrip().startswith("#") and "pytest.skip(" not in ln
        )
        assert not pattern.search(code), f"{f.name}: reads ../shared directly; use conftest.shared_path"


def test_shipped_benchmark_files_are_package_data():
    """Every file of lmforge/benchmarks/ is named by pyproject's package-data, so a wheel has them."""
    from fnmatch import fnmatch

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "lmforge"
    ]
    files = [
        p.relative_to(ROOT / "lmforge").as_posix()
        for p in (ROOT / "lmforge" / "benchmarks").rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert len(files) > 100
    for f in files:
        assert any(fnmatch(f, g.replace("**/", "*")) or fnmatch(f, g) for g in globs), f
