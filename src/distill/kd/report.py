"""The classifier-KD part of a run's report: the table (accuracy, agreement, calibration, KL
to the teacher, size) and one sentence per student."""

from __future__ import annotations

from distill.report.compare import MISSING, format_metric, format_ms, percent
from distill.report.sections import students_with_teacher, table_section


def classifier_table(eval_data: dict) -> list[list[str]]:
    """Classifier KD rows as strings: model, parameters, accuracy, agreement with the teacher,
    ECE, KL to the teacher and inference time, the teacher first."""
    header = ["model", "parameters", "accuracy", "agreement", "ECE", "KL to teacher", "ms / sample"]
    rows = sorted(eval_data.get("rows") or [], key=lambda r: r.get("model") != "teacher")
    return [header] + [[
        str(r.get("model", MISSING)), f"{r['parameters']:,}" if "parameters" in r else MISSING,
        percent(r.get("accuracy")), percent(r.get("agreement")), format_metric(r.get("ece")),
        format_metric(r.get("kl_to_teacher")), format_ms(r.get("ms_per_sample")),
    ] for r in rows]


def classifier_sentences(eval_data: dict) -> list[str]:
    """One sentence per student row: accuracy and size against the teacher."""
    out = []
    for name, row, teacher in students_with_teacher(eval_data):
        text = (f"{name}: accuracy {100 * row['accuracy']:.1f}% vs teacher "
                f"{100 * teacher['accuracy']:.1f}% with {teacher['parameters'] / row['parameters']:.1f}× "
                f"fewer parameters")
        if "agreement" in row:
            text += f"; agrees with the teacher on {100 * row['agreement']:.1f}% of held-out inputs"
        out.append(text + ".")
    return out


def classifier_sections(eval_data: dict) -> tuple[str, str]:
    """(summary, comparison section) of a classifier run's report."""
    meta = (f"dataset {eval_data.get('dataset', '?')} · {eval_data.get('n_samples', '?')} held-out "
            "inputs · ECE: expected calibration error, 15 bins · KL: KL(teacher || model), nats")
    return table_section(classifier_table(eval_data), classifier_sentences(eval_data), meta)
