"""Run reports: the student-vs-teacher comparison table, figures and the HTML page."""

from distill.report.compare import comparison_rows, format_table
from distill.report.html import write_report

__all__ = ["comparison_rows", "format_table", "write_report"]
