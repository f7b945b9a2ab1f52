"""Atomic export directories: every exported model (denoiser, classifier) is written into a
temporary sibling and swapped into place, so a crash never leaves a half-written student."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(directory: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces `directory` (the old one is
    removed only after the new one is in place); on an error `directory` stays untouched."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".tmp-export")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = directory.with_name(directory.name + ".old-export")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)
