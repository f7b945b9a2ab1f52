"""HTML building blocks of report.html that every family's report section uses."""

from __future__ import annotations

import base64
from html import escape

BASELINE = "teacher"


def note(text: str) -> str:
    """A highlighted note (a missing input, a warning)."""
    return f'<p class="note">{escape(text)}</p>'


def img(png: bytes, alt: str) -> str:
    """A PNG inlined as base64 (the report stays one self-contained file)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(table: list[list[str]], baseline: str = BASELINE) -> str:
    """A comparison table (header row, then rows) with the non-baseline rows highlighted."""
    header, *body = table
    head = "".join(f"<th>{escape(c)}</th>" for c in header)
    lines = []
    for cells in body:
        cls = "" if cells[0] == baseline else ' class="other"'
        lines.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(lines)}</tbody></table></div>")


def summary_list(sentences: list[str]) -> str:
    """The summary box: one plain sentence per student."""
    return ('<ul class="summary">' + "".join(f"<li>{escape(s)}</li>" for s in sentences)
            + "</ul>") if sentences else ""


def table_section(table: list[list[str]], sentences: list[str], meta: str) -> tuple[str, str]:
    """(summary list, comparison table with its meta line) for a family without NFE plots."""
    return summary_list(sentences), ("<h2>Comparison</h2>" + f'<p class="meta">{escape(meta)}</p>'
                                     + table_html(table))


def students_with_teacher(eval_data: dict) -> list[tuple[str, dict, dict]]:
    """(name, row, teacher row) for every non-teacher row, when the run has a teacher row."""
    rows = {r.get("model"): r for r in eval_data.get("rows") or []}
    teacher = rows.get("teacher")
    return [] if teacher is None else [(n, r, teacher) for n, r in rows.items() if n != "teacher"]
