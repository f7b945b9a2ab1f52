"""Shared by the benchmark scripts: where BENCHMARKS.md is and how a block is replaced."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _status_mib(key: str) -> float:
    """A memory line (`VmHWM`, `VmRSS`) of /proc/self/status, MiB (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB; unlike ru_maxrss it starts afresh at
    exec, so a child does not inherit its parent's peak."""
    return _status_mib("VmHWM")


def rss_mib() -> float:
    """This process's resident memory now (VmRSS), MiB."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> None:
    """Start VmHWM afresh at the current resident memory (Linux: clear_refs 5), so that
    `peak_rss_mib` then reads the peak of what follows only."""
    Path("/proc/self/clear_refs").write_text("5")


def write_block(begin: str, end: str, body: str, before: str | None = None) -> None:
    """Replace the text between the `begin` and `end` markers of BENCHMARKS.md with `body`
    (when the markers are not there yet: insert the block above the line `before` if given and
    present, else append it)."""
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif before is not None and before in text:
        text = text.replace(before, f"{block}\n\n{before}", 1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
