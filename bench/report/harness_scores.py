"""lm-evaluation-harness scores in the report: one column per task x metric (before -> after), one row per cell."""

from __future__ import annotations

import pandas as pd

from bench.report.frame import LM_EVAL_PREFIX
from bench.report.markdown import escape, fmt_num


def lm_eval_table(group: pd.DataFrame) -> list[str]:
    """Markdown lines of the group's lm-eval figures (none: no lines). Standard errors go beside their metric."""
    after = [c for c in group.columns if c.startswith(LM_EVAL_PREFIX) and c.endswith("_after")]
    after = [c for c in after if not c.endswith("_stderr_after") and group[c].notna().any()]
    if not after:
        return []
    names = [c[len(LM_EVAL_PREFIX) : -len("_after")] for c in after]
    out = [
        "lm-evaluation-harness (before → after training, ± standard error after):",
        "",
        "| method | precision | ga | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for r in group.itertuples(index=False):
        row = r._asdict()
        cells = []
        for name in names:
            before, now = row.get(f"{LM_EVAL_PREFIX}{name}_before"), row.get(f"{LM_EVAL_PREFIX}{name}_after")
            err = row.get(f"{LM_EVAL_PREFIX}{name}_stderr_after")
            text = f"{fmt_num(before)} → {fmt_num(now)}" if pd.notna(before) else fmt_num(now)
            cells.append(text + (f" ± {fmt_num(err)}" if pd.notna(err) else ""))
        out.append(
            f"| {escape(row['method_label'])} | {row['precision']} | {row['grad_accum']} | " + " | ".join(cells) + " |"
        )
    return out
