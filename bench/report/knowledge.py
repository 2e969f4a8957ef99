"""Knowledge injection in the report (`facts`): per cell, recall of the injected facts under the trained phrasing and
under held-out paraphrases, before -> after, and what it forgot (general-text loss after minus before)."""

from __future__ import annotations

import pandas as pd

from bench.report.markdown import escape, fmt_delta, fmt_num


def _arrow(before: object, after: object) -> str:
    return f"{fmt_num(before)} → {fmt_num(after)}" if pd.notna(before) else fmt_num(after)


def knowledge_table(group: pd.DataFrame) -> list[str]:
    """Markdown lines (none when the group has no paraphrase recall)."""
    if not group["score_paraphrase_after"].notna().any():
        return []
    out = [
        "Knowledge injection: recall of the new facts (trained phrasing), recall under held-out paraphrases of facts "
        "never trained paraphrased, and forgetting (general-text loss after − before):",
        "",
        "| method | precision | ga | recall | paraphrase recall | forgetting Δ |",
        "|---|---|---|---|---|---|",
    ]
    for r in group[group["status"] == "success"].itertuples(index=False):
        out.append(
            f"| {escape(r.method_label)} | {r.precision} | {r.grad_accum} | {_arrow(r.score_before, r.score_after)} | "
            f"{_arrow(r.score_paraphrase_before, r.score_paraphrase_after)} | {fmt_delta(r.forgetting_delta)} |"
        )
    return out
