"""Trade-off plot: peak memory vs score and tokens/s vs score, one point per successful cell, labelled by
method, with the Pareto front drawn. A JSON sidecar holds exactly the plotted points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.frame import memory_column
from bench.results.metrics import table


def memory_axis(mem: str) -> str:
    """The memory axis label, from the metric table (bench/results/metrics.py)."""
    return table()[mem].axis


def pareto_front(points: list[tuple[float, float]], x_higher_better: bool, y_higher_better: bool = True) -> list[int]:
    """Indices of points no other point beats on both axes, ordered by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x if x_higher_better else x2 <= x)
            and (y2 >= y if y_higher_better else y2 <= y)
            and (x2, y2) != (x, y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _panels(df: pd.DataFrame) -> list[dict[str, Any]]:
    ok = df[df["status"] == "success"]
    mem = memory_column(ok)
    mem_label = memory_axis(mem)
    panels = []
    for x, x_label, higher in ((mem, mem_label, False), ("tokens_per_s", "tokens/s (timed steps)", True)):
        sub = ok[ok[x].notna() & ok["score_after"].notna()]
        labels = [f"{r.method_label} {r.precision} ga{r.grad_accum}" for r in sub.itertuples()]
        pts = list(zip(sub[x].astype(float), sub["score_after"].astype(float)))
        front = pareto_front(pts, higher, bool(sub["higher_is_better"].iloc[0]) if len(sub) else True)
        panels.append(
            {
                "x": x,
                "x_label": x_label,
                "y": "score_after",
                "points": [{"label": lbl, "x": px, "y": py} for lbl, (px, py) in zip(labels, pts)],
                "front": [labels[i] for i in front],
            }
        )
    return panels


def pareto_plot(df: pd.DataFrame, path: str | Path) -> dict[str, Any]:
    """Write the PNG and its `.json` sidecar; return the sidecar data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(df.groupby(["model", "task"], sort=False))
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.5 * len(groups)), squeeze=False)
    data: dict[str, Any] = {"groups": []}
    for row, ((model, task), group) in enumerate(groups):
        panels = _panels(group)
        data["groups"].append({"model": model, "task": task, "panels": panels})
        for ax, panel in zip(axes[row], panels):
            xs = [p["x"] for p in panel["points"]]
            ys = [p["y"] for p in panel["points"]]
            ax.scatter(xs, ys, zorder=3)
            for p in panel["points"]:
                ax.annotate(p["label"], (p["x"], p["y"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            front = [next(p for p in panel["points"] if p["label"] == lbl) for lbl in panel["front"]]
            if len(front) > 1:
                ax.plot([p["x"] for p in front], [p["y"] for p in front], "--", color="tab:red", label="Pareto front")
                ax.legend(loc="lower right", fontsize=8)
            ax.set_xlabel(panel["x_label"])
            ax.set_ylabel("score after training")
            ax.set_title(f"{model} · {task}", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    Path(path).with_suffix(".json").write_text(json.dumps(data, indent=1))
    return data
