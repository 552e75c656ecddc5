"""Write a file so that a crash never leaves a half-written one under its real name.

Every writer goes to a hidden temporary name beside the target (same folder, so the final rename is
atomic on POSIX file systems) and renames it into place only once the content is complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path | str, write: Callable[[Path], object], suffix: str = "") -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path`. `suffix` keeps
    the extension writers look at (matplotlib picks the format from it, numpy appends `.npy`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when `write` failed
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """UTF-8 text, written atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
