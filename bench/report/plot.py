"""Trade-off plot: memory vs score and tokens/s vs score, one point per successful cell, coloured by method family,
shaped by precision, labelled without overlap, with the Pareto front per panel. Groups where nothing succeeded get
no panel. On CPU the memory axis is what training added (RSS growth), not the process's library baseline. A
`.points.json` sidecar holds exactly the plotted points (and where each label went)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.frame import memory_column
from bench.results.metrics import table

FAMILIES = {
    "full": "full fine-tuning",
    **dict.fromkeys(("lora", "dora", "rslora", "adalora", "qlora", "lora8bit"), "LoRA family"),
    **dict.fromkeys(("loha", "lokr", "vera", "oft", "boft"), "other low-rank / orthogonal"),
    "ia3": "IA3",
    **dict.fromkeys(("prompt", "prefix", "ptuning"), "soft prompts"),
    "adapter": "bottleneck adapters",
    **dict.fromkeys(("bitfit", "freeze"), "selective"),
    **dict.fromkeys(("distill", "prune", "lowrank"), "compression"),
}
COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray"]  # fmt: skip
MARKERS = {"fp32": "o", "bf16": "s", "fp16": "^", "int8": "D", "nf4": "v"}
OFFSETS = [(4, 4), (4, -11), (-6, 6), (-6, -12), (6, 14), (6, -20), (-10, 16), (-10, -22), (10, 0), (-12, 0)]


def memory_axis(mem: str) -> str:
    """The memory axis label, from the metric table (bench/results/metrics.py)."""
    return table()[mem].axis


def family(method: str) -> str:
    return FAMILIES.get(method, "other")


def plot_memory_column(df: pd.DataFrame) -> str:
    """The headline memory; on CPU what training added (RSS growth) where measured: the baseline of ~1 GB of
    libraries would flatten every difference between methods."""
    mem = memory_column(df)
    if mem in ("train_peak_rss_mib", "peak_rss_mib") and df["train_rss_growth_mib"].notna().any():
        return "train_rss_growth_mib"
    return mem


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


def _label(r: Any, vary: set[str]) -> str:
    """The method, and the axes that vary in its group (the marker shows the precision too)."""
    text = str(r.method_label) + (f" {r.precision}" if "precision" in vary else "")
    return text + (f" ga{r.grad_accum}" if "grad_accum" in vary else "") + (" gc" if r.grad_ckpt is True else "")


def _panels(df: pd.DataFrame) -> list[dict[str, Any]]:
    ok = df[df["status"] == "success"]
    mem = plot_memory_column(ok)
    metric = next((m for m in ok["metric"] if isinstance(m, str)), "score")
    higher_y = bool(ok["higher_is_better"].iloc[0]) if len(ok) else True
    vary = {c for c in ("precision", "grad_accum") if ok[c].nunique() > 1}
    panels = []
    for x, x_label, higher in ((mem, memory_axis(mem), False), ("tokens_per_s", "tokens/s (timed steps)", True)):
        sub = ok[ok[x].notna() & ok["score_after"].notna()]
        points = _points(sub, x, vary)
        front = pareto_front([(p["x"], p["y"]) for p in points], higher, higher_y)
        y_label = f"{metric} after training" + ("" if higher_y else " (lower is better)")
        panels.append({"x": x, "x_label": x_label, "y": "score_after", "y_label": y_label, "points": points,
                       "front": [points[i]["label"] for i in front], "front_index": front})  # fmt: skip
    return panels


def _points(sub: pd.DataFrame, x: str, vary: set[str]) -> list[dict[str, Any]]:
    """One point per configuration: with several seeds, the means and their sample sd as error bars."""
    points = []
    for _, g in sub.groupby(["method_label", "precision", "grad_accum", "grad_ckpt"], sort=False, dropna=False):
        xs, ys = g[x].astype(float), g["score_after"].astype(float)
        r = next(g.itertuples())
        point = {"label": _label(r, vary), "x": float(xs.mean()), "y": float(ys.mean()),
                 "family": family(r.method), "precision": r.precision, "seeds": len(g)}  # fmt: skip
        if len(g) > 1:
            point.update(x_sd=float(xs.std(ddof=1)), y_sd=float(ys.std(ddof=1)))
        points.append(point)
    return points


def _place_labels(ax: Any, fig: Any, points: list[dict[str, Any]]) -> None:
    """Annotate each point at the first offset whose text box overlaps no label placed so far."""
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    for p in points:
        for dx, dy in OFFSETS:
            ann = ax.annotate(p["label"], (p["x"], p["y"]), fontsize=7, xytext=(dx, dy), textcoords="offset points")
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed) or (dx, dy) == OFFSETS[-1]:
                placed.append(box)
                p["label_offset"] = [dx, dy]
                p["label_box"] = [float(v) for v in box.extents]
                break
            ann.remove()


def pareto_plot(df: pd.DataFrame, path: str | Path) -> dict[str, Any]:
    """Write the figure and its `.points.json` sidecar; return the sidecar data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    groups = [(k, g) for k, g in df.groupby(["model", "task"], sort=False) if (g["status"] == "success").any()]
    if not groups:
        raise ValueError("no cell succeeded: nothing to plot")
    fig, axes = plt.subplots(len(groups), 2, figsize=(13, 4.8 * len(groups)), squeeze=False)
    fig.canvas.draw()
    families = sorted({family(m) for m in df["method"].dropna()})
    colour = {f: COLOURS[i % len(COLOURS)] for i, f in enumerate(families)}
    data: dict[str, Any] = {"groups": []}
    for row, ((model, task), group) in enumerate(groups):
        panels = _panels(group)
        data["groups"].append({"model": model, "task": task, "panels": panels})
        for ax, panel in zip(axes[row], panels):
            for p in panel["points"]:
                if p["seeds"] > 1:
                    ax.errorbar(p["x"], p["y"], xerr=p["x_sd"], yerr=p["y_sd"], color="gray", lw=0.8, zorder=2)
                ax.scatter(p["x"], p["y"], color=colour[p["family"]], marker=MARKERS.get(p["precision"], "X"),
                           s=42, zorder=3, edgecolors="black", linewidths=0.4)  # fmt: skip
            front = [panel["points"][i] for i in panel["front_index"]]
            if len(front) > 1:
                ax.plot([p["x"] for p in front], [p["y"] for p in front], "--", color="tab:red", lw=1, zorder=2)
            ax.margins(0.15)
            _place_labels(ax, fig, panel["points"])
            ax.set_xlabel(panel["x_label"])
            ax.set_ylabel(panel["y_label"])
            ax.set_title(f"{model} · {task}", fontsize=9)
            ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=colour[f], label=f) for f in families]
    precisions = sorted({p for p in df["precision"].dropna()}, key=list(MARKERS).index)
    handles += [Line2D([], [], ls="", marker=MARKERS.get(p, "X"), color="gray", label=p) for p in precisions]
    handles.append(Line2D([], [], ls="--", color="tab:red", label="Pareto front"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    sidecar_path(path).write_text(json.dumps(data, indent=1))
    return data


def sidecar_path(path: str | Path) -> Path:
    """report.png -> report.points.json (never the records export a `--json` names)."""
    path = Path(path)
    return path.with_name(path.stem + ".points.json")
