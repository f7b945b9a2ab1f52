"""The render task: score distillation of an image teacher into a parametric renderer.

The student is not a network but a scene: renderer parameters per prompted class
(`distill.render.splats`). The teacher is a class-conditional diffusion export (a digits
teacher recipe, or a user's). The run exports the parameters and a PNG of the renders, and
evaluates the renders beside the renderer's initial state and the teacher's own samples for
the same classes: class accuracy of the digits feature classifier (the primary metric: does
the render show the prompted class?), KID, FID, precision and recall against the held-out
images, and `spread`, the pixel distance between renders of one class (their diversity).

    student/
      distill.json            format, renderer config, image shape, classes, prompts, method
      renderer.safetensors    the parameters and each prompt's class
      renders.png             the renders, one column per class
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.diffusion.evaluate import Generator, ImageScorer, generate, make_scorer
from distill.diffusion.samplers import fixed_noise
from distill.diffusion.task import check_teacher
from distill.errors import CheckpointError, ConfigError, DataError, ModelMismatchError
from distill.export_dir import (
    META_FILE,
    load_weights_into,
    read_meta_json,
    staged_directory,
    write_text_atomic,
)
from distill.registry import METHODS, MODELS, TASKS
from distill.report.compare import MISSING, format_metric, percent
from distill.report.html import write_report
from distill.report.plots import image_grid
from distill.report.sections import table_section
from distill.task import Built, Task
from distill.teachers import load_configured_teacher

FORMAT = "distill.renderer/v1"
WEIGHTS = "renderer.safetensors"
EXAMPLE_TEACHER = "configs/digits/teacher-digits.yaml"


def build_render(cfg: Any) -> Built:
    """Data, the frozen class-conditional teacher (checked against the data) and the method
    holding a freshly initialised renderer, for a validated render config."""
    method_cls = METHODS.get(cfg.method.name)
    renderers = getattr(method_cls, "renderers", ())
    if not isinstance(cfg.student, renderers):
        names = " or ".join(repr(r.model_fields["name"].default) for r in renderers)
        raise ConfigError(f"method {cfg.method.name!r} trains a renderer: student.name must be "
                          f"{names}, not {cfg.student.name!r}")
    data = cfg.data.build()
    if not data.is_image or data.num_classes is None:
        raise DataError(f"method {cfg.method.name!r} renders prompted classes of images; data "
                        f"{cfg.data.name!r} is not labelled images (use digits)")
    teacher, meta = load_configured_teacher(cfg, EXAMPLE_TEACHER)
    check_teacher(cfg, data, meta)
    if not teacher.conditional:
        raise ModelMismatchError("score distillation renders a prompted class, but the teacher is "
                                 "unconditional; train the teacher on labelled data (method.cond_dropout "
                                 "> 0 gives it classifier-free guidance)")
    renderer = cfg.student.make_renderer(data.shape, teacher.num_classes, seed=cfg.train.seed)
    method = method_cls(cfg.method, student=renderer, teacher=teacher, data=data,
                        seed=cfg.train.seed, total_steps=cfg.train.steps)
    return Built(data, teacher, meta, method)


def save_renderer(directory: Path, renderer: nn.Module, cfg: Any,
                  num_classes: int, **meta: Any) -> Path:
    """Write the renderer's parameters, metadata and a PNG of its renders atomically."""
    with staged_directory(directory) as staging:
        state = {k: v.detach().contiguous().cpu() for k, v in renderer.state_dict().items()}
        save_file(state, staging / WEIGHTS)
        with torch.no_grad():
            renders = renderer().cpu()
        (staging / "renders.png").write_bytes(image_grid({"renders": renders.numpy()},
                                                         columns=num_classes))
        (staging / META_FILE).write_text(json.dumps({
            "format": FORMAT, "model": cfg.model_dump(mode="json"), "shape": list(renderer.shape),
            "num_classes": num_classes, "prompts": len(renderer.labels), "weights": WEIGHTS,
            **meta}, indent=2))
    return Path(directory)


def load_renderer(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The exported renderer (frozen) and its metadata."""
    directory = Path(directory)
    path = directory / META_FILE
    meta = read_meta_json(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a distill renderer export (format {meta.get('format')!r})")
    cfg = MODELS.get(meta["model"]["name"]).model_validate(meta["model"])
    renderer = cfg.make_renderer(tuple(meta["shape"]), meta["num_classes"], seed=0)
    if len(renderer.labels) != meta["prompts"]:
        raise CheckpointError(f"{path} says {meta['prompts']} prompts, but its renderer config makes "
                              f"{len(renderer.labels)}; the export was edited or is damaged")
    load_weights_into(renderer, directory / meta["weights"], META_FILE, "rerun the run that made it")
    renderer.eval().requires_grad_(False)
    return renderer, meta


def within_class_spread(x: Tensor, labels: Tensor) -> float:
    """Diversity of renders of one prompt: the mean pixel L2 distance between two renders of the
    same class, averaged over classes (0: every class rendered alike). x: (P, C, H, W)."""
    spreads = []
    for label in labels.unique():
        group = x[labels == label].flatten(1)
        if len(group) > 1:
            d = torch.cdist(group, group)
            spreads.append(d.sum() / (len(group) * (len(group) - 1)))
    return float(torch.stack(spreads).mean()) if spreads else float("nan")


def score_row(model: str, x: Tensor, labels: Tensor, scorer: ImageScorer, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, **extra}
    row.update(scorer.score(x, labels=labels))
    row["spread"] = within_class_spread(x, labels)
    return row


def evaluate_render_run(run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
    """Rows for the trained renders, the renderer's initial state (same seed) and the teacher's
    samples of the same classes at each eval.nfe; eval.json, samples.safetensors, report.html."""
    renderer, meta = load_renderer(run_dir / "student")
    data: ArrayData = cfg.data.build()
    teacher, _ = cfg.teacher.load()
    scorer = make_scorer(data, cfg.eval)
    labels = renderer.labels
    with torch.no_grad():
        renders = renderer()
        initial = cfg.student.make_renderer(data.shape, meta["num_classes"], seed=cfg.train.seed)()
    rows = [score_row("renders", renders, labels, scorer, method=cfg.method.name),
            score_row("initial", initial, labels, scorer)]
    samples = {"renders": renders, "initial": initial}
    guidance = getattr(cfg.method, "guidance", cfg.eval.guidance)
    noise = fixed_noise(len(labels), data.shape, cfg.eval.seed)
    for steps in cfg.eval.nfe:
        x = generate(Generator(teacher, [steps], cfg.eval.sampler, guidance), noise, labels, steps)
        rows.append(score_row("teacher", x, labels, scorer, steps=steps, nfe=steps, guidance=guidance))
        samples[f"teacher/nfe={steps}"] = x
    result = {"run": cfg.name, "method": cfg.method.name, "dataset": cfg.data.name,
              "family": RenderTask.name, "primary_metric": "class_accuracy",
              "metrics": ["class_accuracy", *scorer.metrics[:-1], "spread"], "n_samples": len(labels),
              "rows": rows, **scorer.info()}
    write_text_atomic(run_dir / "eval.json", json.dumps(result, indent=2))
    save_file({k: v.contiguous() for k, v in samples.items()}, run_dir / "samples.safetensors")
    write_report(run_dir)
    return rows


def render_table(eval_data: dict) -> list[list[str]]:
    """Rows as strings: model, teacher steps, class accuracy, KID, FID, recall and spread (the
    diversity among one class's renders), the renders first."""
    header = ["model", "steps", "class accuracy", "KID", "FID", "recall", "spread"]
    order = {"renders": 0, "initial": 1, "teacher": 2}
    rows = sorted(eval_data.get("rows") or [], key=lambda r: (order.get(r.get("model"), 3), r.get("steps", 0)))
    return [header] + [[str(r.get("model", MISSING)), str(r.get("steps", "—")),
                        percent(r.get("class_accuracy")), format_metric(r.get("kid")),
                        format_metric(r.get("fid")), format_metric(r.get("recall")),
                        format_metric(r.get("spread"))] for r in rows]


def render_sentences(eval_data: dict) -> list[str]:
    rows = {r.get("model"): r for r in eval_data.get("rows") or [] if r.get("model") != "teacher"}
    if "renders" not in rows or "initial" not in rows:
        return []
    a, b = rows["renders"], rows["initial"]
    return [f"renders: the feature classifier reads the prompted class in {100 * a['class_accuracy']:.1f}% "
            f"of {eval_data.get('n_samples', '?')} renders (initial splats: {100 * b['class_accuracy']:.1f}%)."]


@TASKS.register("render", summary="score distillation of an image teacher into a parametric renderer")
class RenderTask(Task):
    name: ClassVar[str] = "render"
    formats: ClassVar[tuple[str, ...]] = (FORMAT,)
    example_teacher: ClassVar[str] = EXAMPLE_TEACHER

    def build(self, cfg: Any, run_dir: Path) -> Built:
        return build_render(cfg)

    def export(self, run_dir: Path, cfg: Any, built: Built, student: nn.Module) -> None:
        save_renderer(run_dir / "student", student, cfg.student, built.teacher.num_classes,
                      role="student", method=cfg.method.name, run=cfg.name)

    def load_export(self, directory: Path) -> tuple[nn.Module, dict[str, Any]]:
        return load_renderer(directory)

    def evaluate(self, run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
        return evaluate_render_run(run_dir, cfg)

    def table(self, eval_data: dict[str, Any]) -> list[list[str]]:
        return render_table(eval_data)

    def report_sections(self, eval_data: dict[str, Any], run_dir: Path) -> tuple[str, str]:
        meta = (f"dataset {eval_data.get('dataset', '?')} · {eval_data.get('n_samples', '?')} prompts · "
                "class accuracy: the digits feature classifier's reading of the prompted class · "
                "KID/FID in its features against the held-out images")
        return table_section(render_table(eval_data), render_sentences(eval_data), meta)
