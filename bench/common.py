"""Shared by the benchmark scripts: where BENCHMARKS.md is, how a block is replaced, how a
run is reused, and the provenance line every section states once."""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import re
import statistics
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
REUSED: list[str] = []  # runs this invocation read back from an earlier one (same config and code)


def machine() -> str:
    threads = torch.get_num_threads()
    return f"{platform.machine()}, {threads} thread{'s' * (threads != 1)}, torch {torch.__version__}"


@cache
def code_version() -> str:
    """sha256 (12 hex digits) of the package's source files (src/distill/**/*.py, by path and
    content): runs made by other code are never reused."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "distill").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def provenance(command: str) -> str:
    """The section's one line of provenance: command, machine, date, code version, and which
    runs were read back from an earlier invocation (same config and code version)."""
    line = (f"Command: `{command}` ({machine()}; {datetime.date.today().isoformat()}; code "
            f"{code_version()}, a hash of src/distill).")
    if REUSED:
        line += (f" Read back from an earlier invocation of the same code: {', '.join(sorted(REUSED))}; "
                 "every other run was made by this one.")
    else:
        line += " Every run was made by this invocation."
    return line


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """'mean ± std' of `values` × `scale` (the sample std; 0 for one value)."""
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


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


def bench_run(cfg: Any, run_dir: Path) -> tuple[dict, str]:
    """Run one benchmarked config into `run_dir`: (its eval.json, its 'run s' cell).

    A long benchmark can be stopped and rerun with the same --out: a run it finished before
    (run_dir/bench.json, written after its evaluation) is read back, not rerun, when its
    config.yaml is this config and it was made by this code version (`code_version`; it is
    then listed in `REUSED`, which `provenance` states); its seconds are those of the
    invocation that ran it. A run of other code is moved aside to `<run_dir>.code-<version>`
    and made afresh; a run resumed from an interrupted attempt's checkpoint of the same code
    shows '≥' (the earlier attempt's time is not known)."""
    from distill.config import load_config
    from distill.runner import run

    record, eval_path = run_dir / "bench.json", run_dir / "eval.json"
    if run_dir.exists() and _made_by(run_dir) != code_version():
        stale = run_dir.with_name(f"{run_dir.name}.code-{_made_by(run_dir) or 'unknown'}")
        while stale.exists():
            stale = stale.with_name(stale.name + "+")
        print(f"[bench] {run_dir} was made by other code; moved to {stale}", flush=True)
        run_dir.rename(stale)
    if record.is_file() and eval_path.is_file():
        if load_config(run_dir / "config.yaml").model_dump() == cfg.model_dump():
            done = json.loads(record.read_text())
            REUSED.append(run_dir.name)
            return json.loads(eval_path.read_text()), _seconds_cell(done["seconds"], done["resumed"])
        raise SystemExit(f"{run_dir} holds a finished run of another config; use another --out")
    resumed = (run_dir / "checkpoints").is_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "bench-code").write_text(code_version())
    start = time.perf_counter()
    result = run(cfg, run_dir)
    seconds = time.perf_counter() - start
    record.write_text(json.dumps({"seconds": seconds, "resumed": resumed, "code": code_version()}))
    return json.loads((result.run_dir / "eval.json").read_text()), _seconds_cell(seconds, resumed)


def _made_by(run_dir: Path) -> str | None:
    """The code version that made (or started) a benchmark run directory; None when unknown."""
    record, marker = run_dir / "bench.json", run_dir / "bench-code"
    if record.is_file():
        return json.loads(record.read_text()).get("code")
    return marker.read_text().strip() if marker.is_file() else None


def _seconds_cell(seconds: float, resumed: bool) -> str:
    return f"≥ {seconds:.0f}" if resumed else f"{seconds:.0f}"


LM_HEADER = ("| student | held-out perplexity | KL(teacher ‖ student) / token | top-1 agreement % | run s |\n"
             "|---|---|---|---|---|")


def lm_table(teacher_row: str, student_rows: list[str]) -> str:
    """The LM student table: header, the teacher's row, then the students' rows."""
    return "\n".join([LM_HEADER, teacher_row, *student_rows])


def lm_student_row(label: str, runs: list[tuple[Any, Path]]) -> tuple[str, dict]:
    """Train and score each (LM config, run dir) afresh (one per seed); the table row
    'label | perplexity | KL | top-1 % | run s' as mean ± std over them, and the teacher's row."""
    from distill.runner import run

    found, teacher = [], {}
    for cfg, run_dir in runs:
        start = time.perf_counter()
        rows = {r["model"]: r for r in run(cfg, run_dir, force=True).rows}
        teacher = rows["teacher"]
        found.append({**rows["student"], "seconds": time.perf_counter() - start})
        print(label, run_dir.name, {k: found[-1][k] for k in ("perplexity", "kl_to_teacher", "top1_agreement")},
              flush=True)
    row = (f"| {label} | {mean_std([r['perplexity'] for r in found])} | "
           f"{mean_std([r['kl_to_teacher'] for r in found], digits=3)} | "
           f"{mean_std([r['top1_agreement'] for r in found], 100)} | "
           f"{mean_std([r['seconds'] for r in found], digits=0)} |")
    return row, teacher
