"""Shared test set-up, and the one way tests reach the project's shared data (`shared_data`)."""

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tests run tiny shapes, which are fastest on one thread (two threads spin-wait on each other,
    badly so on a busy machine). Subprocess tests set their own threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the project's shared data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HIDE_VAR = "LMFORGE_HIDE_SHARED"  # =1: behave as a user's clone does (CI runs the suite both ways)


def shared_path(relpath: str) -> Path | None:
    """`../shared/data/<relpath>` beside the checkout (this project's larger real samples), or None
    when it is absent or hidden by $LMFORGE_HIDE_SHARED=1. A user's clone has no ../shared: every
    test that reads it goes through here and is skipped there, with the reason shown."""
    if os.environ.get(HIDE_VAR, "") not in ("", "0"):
        return None
    p = SHARED_DATA / relpath
    return p if p.exists() else None


def shared_data(relpath: str) -> Path:
    """shared_path(relpath), or skip the calling test (or module, at import time) saying why."""
    p = shared_path(relpath)
    if p is None:
        why = f"hidden by {HIDE_VAR}=1" if os.environ.get(HIDE_VAR, "") not in ("", "0") else "absent"
        pytest.skip(
            f"needs ../shared/data/{relpath} ({why}: a clone without the project's shared data)",
            allow_module_level=True,
        )
    return p


def needs_shared(relpath: str) -> pytest.MarkDecorator:
    """Mark: skip unless ../shared/data/<relpath> is there (see shared_path)."""
    hidden = os.environ.get(HIDE_VAR, "") not in ("", "0")
    return pytest.mark.skipif(
        shared_path(relpath) is None,
        reason=f"needs ../shared/data/{relpath} ({'hidden by ' + HIDE_VAR + '=1' if hidden else 'absent'}:"
        " a clone without the project's shared data)",
    )
