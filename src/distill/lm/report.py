"""The LM-distillation part of a run's report: the table (perplexity, KL to the teacher,
agreement, draft acceptance, throughput), one sentence per student and the teacher-hacking
monitor's verdict."""

from __future__ import annotations

from distill.report.compare import MISSING, format_metric, percent
from distill.report.sections import students_with_teacher, table_section


def lm_table(eval_data: dict) -> list[list[str]]:
    """LM distillation rows as strings: model, parameters, held-out perplexity, KL to the
    teacher per token, top-1 agreement, draft acceptance (teacher-forced, and measured with
    assisted generation when the run asked for it) and forward tokens/s, the teacher first."""
    header = ["model", "parameters", "perplexity", "KL to teacher", "top-1 agreement",
              "draft acceptance", "tokens / teacher call (γ=4)", "tokens / s"]
    rows = sorted(eval_data.get("rows") or [], key=lambda r: r.get("model") != "teacher")
    assisted = eval_data.get("assisted")
    if assisted:
        header[-1:-1] = ["assisted acceptance (greedy)", f"assisted tokens / teacher call (γ={assisted['gamma']})"]
    table = [header]
    for r in rows:
        cells = [str(r.get("model", MISSING)), f"{r['parameters']:,}" if "parameters" in r else MISSING,
                 format_metric(r.get("perplexity")), format_metric(r.get("kl_to_teacher")),
                 percent(r.get("top1_agreement")), percent(r.get("acceptance_rate")),
                 format_metric(r.get("block_efficiency_4"))]
        if assisted:
            cells += [percent(r.get("assisted_acceptance")), format_metric(r.get("assisted_tokens_per_call"))]
        table.append(cells + [MISSING if not r.get("tokens_per_sec") else f"{r['tokens_per_sec']:.0f}"])
    return table


def lm_sentences(eval_data: dict) -> list[str]:
    """One sentence per student row (perplexity, KL and size against the teacher), then the
    teacher-hacking monitor's verdict when the run had one."""
    out = []
    for name, row, teacher in students_with_teacher(eval_data):
        text = (f"{name}: held-out perplexity {row['perplexity']:.2f} vs teacher "
                f"{teacher['perplexity']:.2f} with {teacher['parameters'] / row['parameters']:.1f}× "
                f"fewer parameters; KL(teacher || {name}) {row['kl_to_teacher']:.3f} nats per token, "
                f"same top-1 token on {100 * row['top1_agreement']:.1f}% of positions; as a "
                f"speculative draft, {100 * row['acceptance_rate']:.1f}% of its tokens accepted")
        if "assisted_acceptance" in row:
            text += (f" (measured in assisted generation, greedy: {100 * row['assisted_acceptance']:.1f}% "
                     f"accepted, {row['assisted_tokens_per_call']:.2f} tokens per teacher call)")
        if row.get("tokens_per_sec") and teacher.get("tokens_per_sec"):
            text += f"; {row['tokens_per_sec'] / teacher['tokens_per_sec']:.1f}× the teacher's tokens/s"
        out.append(text + ".")
    monitor = eval_data.get("teacher_hacking")
    if monitor:
        out.append(("WARNING: " if monitor["hacking"] else "") + monitor["message"] + ".")
    return out


def lm_sections(eval_data: dict) -> tuple[str, str]:
    """(summary, comparison section) of an LM run's report."""
    meta = (f"text {eval_data.get('dataset', '?')} · {eval_data.get('n_tokens', '?')} held-out target "
            "tokens · KL: KL(teacher || model) per token, nats · agreement: same argmax token · "
            "draft acceptance: E[sum min(p_teacher, p_model)], teacher-forced; tokens per teacher "
            "call for 4 drafted tokens: (1 - a^5) / (1 - a)")
    return table_section(lm_table(eval_data), lm_sentences(eval_data), meta)
