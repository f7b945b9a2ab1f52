"""A teacher-hacking monitor for LM distillation (Tiapkin et al. 2025, "On Teacher Hacking in
Language Model Distillation"): the student can keep getting closer to the teacher on the
training data (the proxy) while getting worse at the real text (the golden measure), because
it fits the teacher's imperfections.

Every `every` steps, on fixed blocks: proxy = KL(teacher || student) per token on training
blocks; golden = the student's per-token NLL of held-out text (the ground truth). Both are
logged (`monitor/proxy_kl`, `monitor/golden_nll`); `hacking_verdict` reads the log and flags
the run when the golden measure rose by more than `tolerance` nats above its best while the
proxy kept falling.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from distill.metrics.lm import lm_scores


class TeacherHackingMonitor:
    def __init__(self, every: int, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> None:
        self.every, self.train, self.test = every, train, test
        self.last: dict[str, float] = {}

    def measure(self, student: nn.Module, teacher: nn.Module, step: int) -> None:
        """Measure at the end of steps every, 2·every, ... (step counts from 0)."""
        self.last = {}
        if not self.every or (step + 1) % self.every:
            return
        was_training = student.training
        student.eval()
        proxy = lm_scores({"teacher": teacher, "student": student}, *self.train)["student"]
        golden = lm_scores({"student": student}, *self.test)["student"]
        student.train(was_training)
        self.last = {"monitor/proxy_kl": proxy["kl_to_teacher"], "monitor/golden_nll": golden["nll"]}


def hacking_verdict(log: list[dict[str, Any]], tolerance: float = 0.05) -> dict[str, Any] | None:
    """From metrics.jsonl rows: None when nothing was monitored, else the proxy and golden
    curves and whether the golden NLL rose > tolerance above its best while the proxy fell."""
    points = [(r["step"], r["monitor/proxy_kl"], r["monitor/golden_nll"]) for r in log
              if "monitor/proxy_kl" in r and "monitor/golden_nll" in r]
    if not points:
        return None
    best = min(range(len(points)), key=lambda i: points[i][2])
    _, proxy_at_best, golden_best = points[best]
    last_step, proxy_last, golden_last = points[-1]
    hacking = golden_last > golden_best + tolerance and proxy_last < proxy_at_best
    return {"steps": [p[0] for p in points], "proxy_kl": [p[1] for p in points],
            "golden_nll": [p[2] for p in points], "hacking": hacking,
            "message": (f"teacher hacking: from step {points[best][0]} to {last_step} the KL to the "
                        f"teacher on training text fell {proxy_at_best:.3f} -> {proxy_last:.3f} while the "
                        f"held-out NLL rose {golden_best:.3f} -> {golden_last:.3f}; stop earlier or add data"
                        if hacking else "no teacher hacking: the held-out NLL did not rise while the proxy fell")}
