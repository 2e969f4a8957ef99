"""The HTML report in a real headless browser (Debian's chromium; `./run_all.sh test` installs it where missing):
the page loads offline, every cell has its row, every plot decodes, a header click sorts, and a screenshot is kept."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import cli

FIX = Path(__file__).parent / "fixtures"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browser(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    return subprocess.run([BROWSER, *flags, *args], capture_output=True, text=True, timeout=120)


def records_with_curves() -> list[dict]:
    recs = [json.loads(line) for line in (FIX / "report_records.jsonl").read_text().splitlines()]
    for i, rec in enumerate(recs):
        if rec["status"] == "success":
            rec["loss_curve"] = [3.0 / (1 + k * (i + 1) / 10) for k in range(30)]
            rec["step_times_s"] = [0.4 + 0.01 * ((k * 7 + i) % 5) for k in range(28)]
    repeats = []  # a group of its own with two seeds of one cell: the mean ± sd plot
    for seed, score in ((0, 0.91), (1, 0.89)):
        rec = copy.deepcopy(recs[0])
        rec["run_id"] = f"repeats--s{seed}"
        rec["spec"].update(seed=seed, task="repeats-task")
        rec["metrics"]["score_after"] = score
        repeats.append(rec)
    return [*recs, *repeats]


def test_the_html_report_works_offline_in_a_real_browser(tmp_path):
    if BROWSER is None:
        if os.environ.get("PEFT_BENCH_REQUIRE_BROWSER"):
            pytest.fail("PEFT_BENCH_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium here (./run_all.sh test installs Debian's chromium where it can)")
    recs = records_with_curves()
    source = tmp_path / "results.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in recs))
    page = tmp_path / "report.html"
    res = cli("report", str(source), "--html", str(page), "-o", str(tmp_path / "r.md"))
    assert res.returncode == 0, res.stderr
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # self-contained: nothing fetched
    # tokens/s is the 7th column of the main table (method, precision, status, trainable, memory, tokens/s ...)
    headers = re.search(r"<table class=\"cells\"><thead><tr>(.*?)</tr>", text).group(1)
    col = [re.sub("<.*?>", "", h) for h in re.findall(r"<th>(.*?)</th>", headers)].index("tokens/s") + 1
    dom = browser("--dump-dom", f"{page.as_uri()}#sort={col}").stdout
    body = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<body[^>]*>", dom).group(0)))
    assert body.get("ready") == "1", body
    assert int(body["images"]) >= 3 and body["images-ok"] == body["images"]  # trade-off, per-cell, repeats plots
    for rec in recs:  # every cell's row is on the page
        assert f"<td>{rec['spec']['method_label']}</td>" in dom, rec["run_id"]
    ok = [r for r in recs if r["status"] == "success" and r["spec"]["task"] != "repeats-task"]
    by_speed = sorted(ok, key=lambda r: -r["metrics"]["tokens_per_s"])
    assert body["sorted"].split(" ;; ")[: len(ok)] == [r["spec"]["method_label"] for r in by_speed]  # sorted descending
    shot = tmp_path / "report.png"
    browser("--window-size=1400,1000", f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("PEFT_BENCH_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
