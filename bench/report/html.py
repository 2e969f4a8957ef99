"""`report --html F.html`: one self-contained page (no network): the markdown report's every table made sortable,
the trade-off plot, score curves, each cell's loss curve and step-time distribution, and mean ± sd error bars for
repeated cells, all embedded. The page marks itself ready (`data-ready`, row and image counts) for the browser
test, and sorts on a header click (numbers by value; cells without a number stay last)."""

from __future__ import annotations

import base64
import html
import io
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12.5px}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f2f4f7;cursor:pointer;position:sticky;top:0}th[data-dir=asc]::after{content:" ▲"}
th[data-dir=desc]::after{content:" ▼"}tr:nth-child(even) td{background:#fafbfc}img{max-width:100%}
h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:32px}code{background:#f2f2f2;padding:0 3px}"""
SCRIPT = """function num(t){const m=t.replace(/[,×%]/g,'').match(/^[-+]?\\d*\\.?\\d+(e[-+]?\\d+)?/i);
return m?parseFloat(m[0]):null}
function sortBy(th){const table=th.closest('table'),i=[...th.parentNode.children].indexOf(th);
const dir=th.dataset.dir==='asc'?'desc':'asc';table.querySelectorAll('th').forEach(h=>delete h.dataset.dir);
th.dataset.dir=dir;const body=table.tBodies[0],rows=[...body.rows];rows.sort((a,b)=>{
const x=a.cells[i].innerText.trim(),y=b.cells[i].innerText.trim(),nx=num(x),ny=num(y);
if(nx!==null&&ny===null)return -1;if(ny!==null&&nx===null)return 1;
const c=(nx!==null)?nx-ny:x.localeCompare(y);return dir==='asc'?c:-c});
rows.forEach(r=>body.appendChild(r))}
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
function ready(){const imgs=[...document.images];document.body.dataset.rows=
document.querySelectorAll('table.cells tbody tr').length;document.body.dataset.images=imgs.length;
document.body.dataset.imagesOk=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
if(location.hash.startsWith('#sort=')){const th=document.querySelector('table.cells th:nth-child('+
location.hash.slice(6)+')');sortBy(th);sortBy(th);document.body.dataset.sorted=[...th.closest('table')
.tBodies[0].rows].map(r=>r.cells[0].innerText.trim()).join(' ;; ')}document.body.dataset.ready='1'}
window.addEventListener('load',ready);"""


def inline(text: str) -> str:
    """The markdown of one table cell or line: escaped, **bold**, `code`, escaped pipes."""
    out = html.escape(text.replace("\\|", "|"))
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def markdown_to_html(md: str) -> str:
    """The report's own markdown subset (headings, bullets, github tables, paragraphs) as HTML. Tables whose first
    header is `method` are cell tables (class `cells`)."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[\s|:-]+\|", lines[i + 1].strip()):
            head = _cells(line)
            kind = ' class="cells"' if head and head[0] == "method" else ""
            out.append(
                f"<table{kind}><thead><tr>" + "".join(f"<th>{inline(h)}</th>" for h in head) + "</tr></thead><tbody>"
            )
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append("</tbody></table>")
            continue
        if m := re.match(r"(#{1,3}) (.*)", line):
            n = len(m.group(1))
            out.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _file_png(write: Any) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        write(path)
        data = path.read_bytes()
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(data).decode() + '">'


def cell_plots(records: list[dict[str, Any]], title: str) -> str:
    """Loss curve and step-time distribution of every cell of a group, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if r.get("loss_curve") or r.get("step_times_s")]
    if not runs:
        return ""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    for r in runs:
        label = r["spec"].get("method_label") or r["spec"].get("method")
        label += f" {r['spec'].get('precision')} ga{r['spec'].get('grad_accum')}"
        if r.get("loss_curve"):
            left.plot(range(1, len(r["loss_curve"]) + 1), r["loss_curve"], label=label, lw=1)
    times = [
        (r["spec"].get("method_label") or r["spec"].get("method"), r["step_times_s"])
        for r in runs
        if r.get("step_times_s")
    ]
    if times:
        right.boxplot([t for _, t in times], vert=False, showfliers=True)
        right.set_yticks(range(1, len(times) + 1), [n for n, _ in times], fontsize=7)
    left.set(xlabel="optimizer step", ylabel="training loss", title=f"{title}: loss per step")
    left.legend(fontsize=7)
    right.set(xlabel="step time (s), timed steps", title=f"{title}: step-time distribution")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _png(fig)


def repeats_plot(group: pd.DataFrame, title: str) -> str:
    """Mean ± sample sd over seeds of the score and tokens/s, per configuration (only with several seeds)."""
    if group["seed"].nunique() < 2:
        return ""
    import matplotlib.pyplot as plt

    ok = group[group["status"] == "success"]
    stats = ok.groupby(["method_label", "precision", "grad_accum"], sort=False)[["score_after", "tokens_per_s"]]
    mean, sd = stats.mean(), stats.std(ddof=1).fillna(0)
    labels = [" ".join(map(str, k)) for k in mean.index]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.4 * len(labels) + 1.5))
    for ax, col, name in zip(axes, ("score_after", "tokens_per_s"), ("score after", "tokens/s")):
        ax.barh(labels, mean[col], xerr=sd[col], capsize=3, color="tab:blue", alpha=0.7)
        ax.set(title=f"{title}: {name}, mean ± sd over seeds")
        ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def write_html(df: pd.DataFrame, records: list[dict[str, Any]], md: str, path: Path, group_by: tuple[str, ...]) -> None:
    """The page: the report's markdown as HTML, then the figures per group."""
    from bench.report.curves import curve_plot
    from bench.report.frame import with_ratios
    from bench.report.plot import pareto_plot

    parts = [markdown_to_html(md), "<h2>Figures</h2>"]
    if (df["status"] == "success").any():
        parts.append(_file_png(lambda p: pareto_plot(with_ratios(df), p)))
    if df["score_curve"].notna().any():
        parts.append(_file_png(lambda p: curve_plot(df, p, group_by)))
    by_id = {r["run_id"]: r for r in records}
    for key, group in df.groupby(list(group_by), sort=False, dropna=False):
        title = " · ".join(map(str, key if isinstance(key, tuple) else (key,)))
        recs = [by_id[i] for i in group["run_id"] if i in by_id]
        parts += [f"<h3>{html.escape(title)}</h3>", cell_plots(recs, title), repeats_plot(group, title)]
    body = "\n".join(p for p in parts if p)
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>peft-bench report</title><style>{STYLE}</style>"
    path.write_text(page + f"</head><body>{body}<script>{SCRIPT}</script></body></html>", encoding="utf-8")
