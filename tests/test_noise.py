"""The machine's load during the timed steps: measured, judged, marked in the report, left out of compare."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

from bench.trackers.cpu_load import CpuLoadTracker, noise_verdict
from bench.trackers.phases import Phase
from conftest import ROOT

FIX = ROOT / "tests" / "fixtures" / "report_records.jsonl"


def test_a_deliberate_load_is_other_processes_share_and_the_cells_own_cpu_is_not():
    cores = psutil.cpu_count()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        as_idle, as_burner = CpuLoadTracker(0.05), CpuLoadTracker(0.05)
        as_idle.start(idle.pid)
        as_burner.start(burners[0].pid)
        time.sleep(1.5)
        as_idle.stop()
        as_burner.stop()
    finally:
        for p in (*burners, idle):
            p.kill()
            p.wait()
    window = {Phase.TRAIN_TIMED: {"start_unix": as_idle.t[1], "end_unix": as_idle.t[-2]}}
    share_idle = as_idle.attribute(window, None).metrics["other_cpu_share"]
    share_burner = as_burner.attribute(window, None).metrics["other_cpu_share"]
    assert share_idle > 0.5  # every core spinning for someone else
    assert share_idle - share_burner > 0.02  # the watched tree's own CPU is not "other" (0 if it were)
    noisy, why = noise_verdict({"other_cpu_share": share_idle, "step_time_spread": 1.1, "timed_steps": 10})
    assert noisy is True and "other processes used" in why


def test_the_verdict_reads_the_spread_and_says_when_it_cannot_judge():
    assert noise_verdict({"other_cpu_share": 0.02, "step_time_spread": 1.1, "timed_steps": 10}) == (False, "")
    noisy, why = noise_verdict({"other_cpu_share": 0.02, "step_time_spread": 4.0, "timed_steps": 10})
    assert noisy and "p90/p50 = 4.00" in why
    assert noise_verdict({"other_cpu_share": 0.02, "step_time_spread": 4.0, "timed_steps": 2})[0] is False
    noisy, why = noise_verdict({})
    assert noisy is None and "neither" in why


def test_the_report_marks_noisy_speeds_and_compare_leaves_them_out(tmp_path, capsys):
    from bench import report
    from bench.cli import main

    recs = [json.loads(line) for line in FIX.read_text().splitlines()]
    noisy = [json.loads(json.dumps(r)) for r in recs]
    noisy[1]["metrics"]["noisy"] = True
    noisy[1]["metrics"]["tokens_per_s"] *= 0.25  # 75% slower next to another job
    path = tmp_path / "noisy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in noisy))
    assert "(noisy)" in report.to_markdown(report.load(path))
    assert main(["compare", str(FIX), str(path)]) == 0
    assert "not compared: noisy timing in NEW" in capsys.readouterr().out
