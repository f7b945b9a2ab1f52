"""Report figures rendered with matplotlib's Agg backend, returned as PNG bytes."""

from __future__ import annotations

import io
import math
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogFormatter, NullLocator

from distill.report.compare import best_row, higher_is_better, metric_label

DPI = 100
_DATA_COLOR = "#6b7280"
_BASELINE_COLOR = "#2563eb"
_OTHER_COLORS = ["#ea580c", "#16a34a", "#9333ea", "#db2777", "#0d9488", "#ca8a04"]
_OTHER_MARKERS = ["*", "D", "P", "X", "^", "s"]
_KEY = re.compile(r"^(?P<model>.+)/nfe=(?P<nfe>\d+)$")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    """Render a figure to PNG and release it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    return buf.getvalue()


class _PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (0.3, not 3e-01)."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:.3g}"


def _log_y(ax) -> None:
    """Log-scale y with plain decimal tick labels; minor ticks labelled on short ranges only."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PlainLogFormatter())
    ax.yaxis.set_minor_formatter(
        _PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5))
    )


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def loss_curves(metrics: list[dict]) -> bytes | None:
    """One subplot per `loss/...` key against step (log-y when all positive); None if no losses."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, record in enumerate(metrics):
        step = record.get("step", i)
        for key, value in record.items():
            if key.startswith("loss/") and _finite(value) and _finite(step):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(float(step))
                ys.append(float(value))
    if not series:
        return None
    keys = sorted(series)
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(3.8 * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        xs, ys = series[key]
        ax.plot(xs, ys, color=_BASELINE_COLOR, linewidth=1.2, marker="." if len(xs) < 30 else None)
        if all(y > 0 for y in ys):
            _log_y(ax)
        ax.set_title(key.removeprefix("loss/"), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3, which="both")
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return _png(fig)


def _parse_key(key: str) -> tuple[str, int | None]:
    match = _KEY.match(key)
    return (match["model"], int(match["nfe"])) if match else (key, None)


def _panel_order(keys: list[str]) -> list[str]:
    """Data first, then teacher panels by NFE, then every other model by name and NFE."""

    def rank(key: str) -> tuple:
        model, nfe = _parse_key(key)
        group = 0 if key == "data" else 1 if model == "teacher" else 2
        return (group, model, -1 if nfe is None else nfe)

    return sorted(keys, key=rank)


def panel_title(key: str) -> str:
    """`teacher/nfe=1` -> `teacher · 1 step`; other keys are returned unchanged."""
    model, nfe = _parse_key(key)
    if nfe is None:
        return key
    return f"{model} · {nfe} step{'' if nfe == 1 else 's'}"


def _as_points(array: np.ndarray) -> np.ndarray:
    points = np.asarray(array, dtype=np.float64)
    if points.ndim == 1:
        points = points[:, None]
    points = points.reshape(points.shape[0], -1)
    if points.shape[1] == 1:
        points = np.concatenate([points, np.zeros_like(points)], axis=1)
    return points[:, :2]


def _subsample(points: np.ndarray, max_points: int) -> np.ndarray:
    if len(points) <= max_points:
        return points
    index = np.random.default_rng(0).choice(len(points), size=max_points, replace=False)
    return points[np.sort(index)]


def _shared_limits(panels: list[np.ndarray]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits covering 99% of the points of every panel, so one outlier cannot squash all."""
    stacked = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in panels])
    if len(stacked) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = np.percentile(stacked, 0.5, axis=0), np.percentile(stacked, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def scatter_grid(samples: dict[str, np.ndarray], max_points: int = 2000) -> bytes:
    """One scatter panel per sample set (data, teacher, students) on shared axis limits.

    Points with more than two coordinates are shown by their first two, as the title says.
    """
    if not samples:
        raise ValueError("scatter_grid needs at least one sample set")
    keys = _panel_order(list(samples))
    models = sorted({_parse_key(k)[0] for k in keys} - {"data", "teacher"})
    dims = {np.asarray(samples[k]).reshape(len(samples[k]), -1).shape[1] for k in keys}
    panels = [_subsample(_as_points(samples[k]), max_points) for k in keys]
    xlim, ylim = _shared_limits(panels)
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(3.0 * ncols, 3.0 * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key, points in zip(axes, keys, panels, strict=False):
        model, _ = _parse_key(key)
        color = (_DATA_COLOR if key == "data" else
                 _BASELINE_COLOR if model == "teacher" else
                 _OTHER_COLORS[models.index(model) % len(_OTHER_COLORS)])
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color=color, linewidths=0,
                   rasterized=True)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(panel_title(key), fontsize=10)
        ax.tick_params(labelsize=7)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if dims != {2}:
        shown = "first two coordinates shown" if max(dims) > 2 else "1-D values on the x axis"
        fig.suptitle(f"points have {'/'.join(map(str, sorted(dims)))} dimensions: {shown}",
                     fontsize=9, color=_DATA_COLOR)
    return _png(fig)


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one (rows * (H + 1), columns * (W + 1), C) mosaic in [0, 1]."""
    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    mosaic = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c))
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        mosaic[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = \
            np.transpose((np.clip(image, -1, 1) + 1) / 2, (1, 2, 0))
    return mosaic


def image_grid(samples: dict[str, np.ndarray], max_images: int = 100, columns: int = 10) -> bytes:
    """One mosaic per sample set (data, teacher at each NFE, students): the first `max_images`
    images, `columns` per row. Conditional samples come in class order 0, 1, ..., so each
    column of a generated mosaic is one class."""
    if not samples:
        raise ValueError("image_grid needs at least one sample set")
    keys = _panel_order(list(samples))
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(2.6 * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        mosaic = _tile(np.asarray(samples[key], dtype=np.float64)[:max_images], columns)
        ax.imshow(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic, cmap="gray",
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(panel_title(key), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return _png(fig)


def metric_vs_nfe(eval_data: dict, metric: str, baseline: str = "teacher") -> bytes:
    """The baseline's metric against NFE (log2 x), other models overlaid as labelled markers."""
    rows = [r for r in eval_data.get("rows") or [] if _finite(r.get(metric)) and _finite(r.get("nfe"))]
    base = [r for r in rows if r.get("model") == baseline]
    others = [r for r in rows if r.get("model") != baseline]
    # many models (a benchmark's plot): a wider figure, the legend beside the axes, and no value
    # labels (the table next to the plot has the numbers)
    crowded = len({(str(r.get("model")), str(r.get("sampler", ""))) for r in others}) > 4
    fig = _figure(9.0, 4.4) if crowded else _figure(5.2, 3.6)
    ax = fig.subplots()

    samplers = sorted({str(r.get("sampler", "")) for r in base})
    for i, sampler in enumerate(samplers):
        line = sorted((r for r in base if str(r.get("sampler", "")) == sampler),
                      key=lambda r: r["nfe"])
        label = baseline if len(samplers) == 1 else f"{baseline} · {sampler}"
        ax.plot([r["nfe"] for r in line], [r[metric] for r in line], marker="o",
                color=_BASELINE_COLOR, linestyle=["-", "--", "-.", ":"][i % 4], label=label)
    best = best_row(base, metric)
    if best is not None:
        ax.axhline(best[metric], color="#374151", linestyle=":", linewidth=1.3,
                   label=f"best {baseline} ({best[metric]:.4g})")

    groups = sorted({(str(r.get("model")), str(r.get("sampler", ""))) for r in others})
    many_samplers = len({s for _, s in groups}) > 1
    models = sorted({model for model, _ in groups})
    for i, (model, sampler) in enumerate(groups):
        points = sorted((r for r in others if (str(r.get("model")), str(r.get("sampler", "")))
                         == (model, sampler)), key=lambda r: r["nfe"])
        label = f"{model} · {sampler}" if many_samplers else model
        ax.scatter([r["nfe"] for r in points], [r[metric] for r in points], s=140, zorder=3,
                   marker=_OTHER_MARKERS[i % len(_OTHER_MARKERS)],
                   color=_OTHER_COLORS[models.index(model) % len(_OTHER_COLORS)],
                   edgecolors="black",
                   linewidths=0.6, label=label)
        for r in points if not crowded else []:
            ax.annotate(f"{r[metric]:.3g}", (r["nfe"], r[metric]), xytext=(8, 6),
                        textcoords="offset points", fontsize=8)

    values = [float(r[metric]) for r in rows]
    nfes = sorted({int(r["nfe"]) for r in rows if r["nfe"] > 0})
    if nfes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(nfes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(n) for n in nfes])
        ax.set_xlim(nfes[0] / 1.5, nfes[-1] * 1.5)
    if values and min(values) > 0 and max(values) / min(values) > 10:
        _log_y(ax)
    if not rows:
        ax.text(0.5, 0.5, f"no rows report {metric}", ha="center", va="center",
                transform=ax.transAxes, color=_DATA_COLOR)
    direction = "higher" if higher_is_better(metric) else "lower"
    ax.set_title(f"{metric_label(metric)} vs NFE ({direction} is better)", fontsize=10)
    ax.set_xlabel("function evaluations (NFE)")
    ax.set_ylabel(metric_label(metric))
    ax.grid(True, alpha=0.3, which="both")
    if rows and crowded:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=2)
    elif rows:
        ax.legend(fontsize=8, frameon=False)
    return _png(fig)
