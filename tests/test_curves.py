"""Score curves (`eval_every`): points every N steps, evaluations paused out of the training phase's time, memory
and energy, and the report's cost to reach a share of the best score."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import report
from bench.trackers.phases import PhaseClock, read_marks
from conftest import cli, run_cell_inproc

FIX = Path(__file__).parent / "fixtures"


def test_a_pause_is_left_out_of_the_phase_window_for_peaks_energy_and_duration(tmp_path):
    import time

    from bench.trackers.nvml import Timeline
    from bench.trackers.rss import RssSampler

    clock = PhaseClock(tmp_path / "phases.jsonl")
    clock.start("train")
    with clock.paused():
        time.sleep(0.05)
    clock.end("train")
    span = read_marks(tmp_path / "phases.jsonl")["train"]
    ((t0, t1),) = span["pauses"]
    assert t1 - t0 >= 0.05 and clock.spans["train"]["duration_s"] < 0.05
    tl = Timeline()
    for t, used, energy in ((0, 100, 0), (1, 200, 1000), (2, 900, 5000), (3, 300, 6000), (4, 250, 7000)):
        tl.add(float(t), used, used, energy)
    whole, paused = tl.window(0, 4), tl.window(0, 4, [[1.5, 2.5]])
    assert whole["peak_nvml_mib"] == 900 and paused["peak_nvml_mib"] == 300  # the evaluation's 900 MiB left out
    # the counter (mJ) interpolated: 3.0 J at t=1.5, 5.5 J at t=2.5, so 2.5 J of the 7 J were the evaluation
    assert whole["energy_j"] == 7.0 and paused["energy_j"] == pytest.approx(4.5)
    rss = RssSampler(0.01)
    rss.t.extend([0.0, 1.0, 2.0, 3.0])
    rss.rss.extend([10.0, 20.0, 99.0, 30.0])
    assert rss.window_peak(0, 3) == 99 and rss.window_peak(0, 3, [[1.5, 2.5]]) == 30


SLOW_EVAL_S = 0.5


@pytest.mark.slow
def test_eval_every_gives_a_curve_and_leaves_the_training_unchanged(tmp_path, monkeypatch):
    import time

    from bench.tasks.synthetic import Reverse

    common = dict(task="reverse", task_options={"n_train": 200, "n_eval": 32}, steps=40, warmup_steps=2, batch_size=16)
    plain = run_cell_inproc(tmp_path / "plain", **common)
    evaluate = Reverse.evaluate

    def slow_evaluate(self, *args, **kwargs):  # an evaluation far longer than a step (~10 ms): where it lands shows
        time.sleep(SLOW_EVAL_S)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Reverse, "evaluate", slow_evaluate)
    curve = run_cell_inproc(tmp_path / "curve", eval_every=10, **common)
    assert plain["status"] == curve["status"] == "success", (plain.get("error"), curve.get("error"))
    points, m = curve["score_curve"], curve["metrics"]
    assert [p["step"] for p in points] == [0, 10, 20, 30, 40] and plain["score_curve"] is None
    assert points[0]["score"] == m["score_before"] and points[-1]["score"] == m["score_after"]
    assert [p["tokens"] for p in points] == [0, 1600, 3200, 4800, 6400]  # 16 x 10 real tokens a step
    assert curve["loss_curve"] == plain["loss_curve"]  # evaluations do not change what is trained
    assert m["score_after"] == plain["metrics"]["score_after"]
    # three evaluations during training, each a pause: out of every timed step and of the training phase's time
    assert m["curve_eval_time_s"] >= 3 * SLOW_EVAL_S
    assert max(curve["step_times_s"]) < SLOW_EVAL_S
    # within the run (a loaded runner slows every step, not the check): the train phase is its steps plus little,
    # where the three evaluations inside it would add >= 3 x SLOW_EVAL_S
    assert curve["timings"]["time_train_s"] - sum(curve["step_times_s"]) < 2 * SLOW_EVAL_S
    # throughput is over the timed steps only (a ratio to the plain run is CPU noise on a shared runner)
    assert m["tokens_per_s"] == pytest.approx(m["timed_tokens"] / sum(curve["step_times_s"]))
    assert m["timed_tokens"] == plain["metrics"]["timed_tokens"]


def curve_records():
    recs = [json.loads(line) for line in (FIX / "report_records.jsonl").read_text().splitlines()]
    ok = [r for r in recs if r["status"] == "success" and r["spec"]["task"] == recs[0]["spec"]["task"]]
    out = []
    for label, scores in (("fast", [0.5, 0.8, 0.9, 0.95]), ("slow", [0.5, 0.55, 0.6, 0.7])):
        rec = copy.deepcopy(ok[0])
        rec["run_id"] = f"curve-{label}"
        rec["spec"].update(method="lora", method_label=label)
        rec["metrics"].update(score_after=scores[-1], energy_per_token_j=0.5)
        rec["score_curve"] = [
            {"step": 10 * k, "tokens": 100 * k, "train_s": 1.0 * k, "score": s} for k, s in enumerate(scores)
        ]
        out.append(rec)
    return recs, out


def test_report_gives_the_cost_to_reach_the_target_share_of_the_best(tmp_path):
    recs, curves = curve_records()
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*recs, *curves]))
    df = report.load(path)
    md = report.to_markdown(df, target=0.9)
    # the best in the group is the curves' own 0.95: 90% of it is 0.855, first reached at step 20 (score 0.9)
    assert "Score curves: training cost to reach 90% of the best exact_match in this group (≥ 0.855)" in md
    assert "| fast | bf16 | 1 | 4 | 20 | 200 | 2.00 | 100 |" in md  # J ≈ 200 tokens x 0.5 J/token
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| slow")}
    assert "not reached (last 0.7" in rows["slow"]
    assert cli("report", str(path), "--target", "1.5").returncode == 2
    res = cli("report", str(path), "--plot-curves", str(tmp_path / "c.png"), "-o", str(tmp_path / "r.md"))
    assert res.returncode == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG", res.stderr
    bare = cli("report", str(FIX / "report_records.jsonl"), "--plot-curves", str(tmp_path / "d.png"))
    assert bare.returncode == 2 and "no record has a score curve" in bare.stderr
