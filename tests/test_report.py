"""Reporter: golden markdown, ratios vs full, plot with its data sidecar, exports, speed."""

import copy
import json
import struct
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import report
from bench.report.plot import pareto_front, pareto_plot

FIX = Path(__file__).parent / "fixtures"


def fixture_records():
    return [json.loads(line) for line in (FIX / "report_records.jsonl").read_text().splitlines()]


def test_golden_markdown_is_exact():
    df = report.load(FIX / "report_records.jsonl")
    assert report.to_markdown(df) == (FIX / "report_expected.md").read_text()


def test_failed_cells_are_kept_with_their_status_and_pipes_escaped():
    md = report.to_markdown(report.load(FIX / "report_records.jsonl"))
    for status in ("**oom**", "**timeout**", "**unsupported**"):
        assert status in md
    assert "dora\\|x" in md and "79,480 at OOM" in md
    assert "**unsupported**: no bias terms" in md  # the reason a cell did not run is in the report


def test_ratios_against_full_baseline_by_precision():
    df = report.with_ratios(report.load(FIX / "report_records.jsonl"))
    lora16 = df[(df.method == "lora") & (df.precision == "fp16")].iloc[0]
    assert lora16["mem_x"] == pytest.approx(8381.0 / 30379.0)  # training peaks of the process trees
    assert lora16["speed_x"] == pytest.approx(15123.0 / 11001.0)
    assert lora16["ckpt_x"] == pytest.approx(45127680 / 2471628800)
    assert lora16["score_delta"] == pytest.approx(0.88 - 0.905)
    assert pd.isna(df[df.status == "oom"].iloc[0]["speed_x"])


def test_missing_baseline_gives_no_ratio_columns():
    recs = [r for r in fixture_records() if r["spec"]["method"] != "full"]
    md = report.to_markdown(report.records_to_frame(recs))
    assert "speed × full" not in md and "Δ score vs full" not in md and "lora-r16" in md


def test_number_formatting():
    assert report.fmt_num(1234567.8) == "1,234,568" and report.fmt_num(0.0012345) == "0.00123"
    assert report.fmt_num(12.345) == "12.3" and report.fmt_num(None) == "-"
    assert report.fmt_bytes(45127680) == "43.0 MiB" and report.fmt_bytes(512) == "512 B"


def test_pareto_front():
    pts = [(10, 0.5), (20, 0.9), (15, 0.4), (5, 0.3)]  # memory, lower is better
    assert pareto_front(pts, x_higher_better=False) == [3, 0, 1]
    assert pareto_front(pts, x_higher_better=True) == [1]


def test_plot_is_a_png_with_one_point_per_successful_cell(tmp_path):
    df = report.with_ratios(report.load(FIX / "report_records.jsonl"))
    path = tmp_path / "plot.png"
    data = pareto_plot(df, path)
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 500 and height > 300
    sidecar = json.loads((tmp_path / "plot.points.json").read_text())
    assert sidecar == json.loads(json.dumps(data))
    (group,) = sidecar["groups"]
    assert [len(p["points"]) for p in group["panels"]] == [5, 5]
    assert group["panels"][0]["x"] == "train_peak_nvml_process_mib"
    assert group["panels"][0]["y_label"] == "exact_match after training"  # the task's metric, not "score"
    assert "full bf16" in group["panels"][0]["front"]
    for panel in group["panels"]:  # every label placed where it overlaps no other
        boxes = [p["label_box"] for p in panel["points"]]
        overlap = lambda a, b: a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]  # noqa: E731
        assert not [(i, j) for i in range(len(boxes)) for j in range(i) if overlap(boxes[i], boxes[j])]
        assert len({(p["family"], p["precision"]) for p in panel["points"]}) > 1  # colour and marker carry these


def test_plot_leaves_out_groups_where_nothing_succeeded_and_never_overwrites_the_json_export(tmp_path):
    from bench.cli import main

    recs = [json.loads(line) for line in (FIX / "report_records.jsonl").read_text().splitlines()]
    dead = copy.deepcopy(recs[0])
    dead.update(run_id="other--x--full", status="failed")
    dead["spec"].update(model="other-model")
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*recs, dead]))
    data = pareto_plot(report.with_ratios(report.load(path)), tmp_path / "p.png")
    assert [g["model"] for g in data["groups"]] == ["llama-1b-shape"]  # no empty panel for other-model
    rc = main(["report", str(path), "-o", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json"),
               "--plot", str(tmp_path / "r.png")])  # fmt: skip
    assert rc == 0 and isinstance(json.loads((tmp_path / "r.json").read_text()), list)  # the records, not points
    assert (
        main(["report", str(path), "--json", str(tmp_path / "q.points.json"), "--plot", str(tmp_path / "q.png")]) == 2
    )


def test_a_metric_in_the_table_reaches_the_report_and_the_csv_without_report_code(tmp_path):
    recs = [json.loads(line) for line in (FIX / "report_records.jsonl").read_text().splitlines()]
    for rec in recs:
        rec["metrics"]["widget_rate"] = 0.25
        rec["metric_specs"] = {"widget_rate": {"doc": "widgets per token a plugin measured", "label": "widget rate",
                                               "group": "widgets"}}  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs))
    df = report.load(path)
    md = report.to_markdown(df)
    assert "Widgets:" in md and "| method | precision | ga | widget rate |" in md
    assert "- widget rate: widgets per token a plugin measured" in md
    df.to_csv(tmp_path / "r.csv", index=False)
    assert "widget_rate" in (tmp_path / "r.csv").read_text().splitlines()[0]


def test_csv_and_json_exports_round_trip(tmp_path):
    df = report.load(FIX / "report_records.jsonl")
    df.to_csv(tmp_path / "r.csv", index=False)
    df.to_json(tmp_path / "r.json", orient="records")
    back_csv = report.read_export(tmp_path / "r.csv")
    back_json = report.read_export(tmp_path / "r.json")
    for back in (back_csv, back_json):
        assert list(back.columns) == list(df.columns)
        pd.testing.assert_frame_equal(
            back.astype(object).where(back.notna(), None), df.astype(object).where(df.notna(), None), check_dtype=False
        )


def test_cli_report_writes_markdown_csv_json_and_plot(tmp_path):
    from bench.cli import main

    out = tmp_path / "r.md"
    rc = main(
        [
            "report",
            str(FIX / "report_records.jsonl"),
            "-o",
            str(out),
            "--csv",
            str(tmp_path / "r.csv"),
            "--json",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "r.png"),
        ]
    )
    assert rc == 0 and out.read_text().startswith("# peft-bench report: golden")
    assert all((tmp_path / f).exists() for f in ("r.csv", "r.json", "r.png", "r.json"))


def test_rendering_ten_thousand_records_is_fast():
    base = fixture_records()
    recs = []
    for i in range(10_000):
        r = copy.deepcopy(base[i % len(base)])
        r["run_id"] = f"{r['run_id']}-{i}"
        r["spec"]["model"] = f"m{i % 50}"
        recs.append(r)
    t0 = time.process_time()  # CPU time: parallel tests on a shared machine do not count against it
    md = report.to_markdown(report.records_to_frame(recs))
    assert time.process_time() - t0 < 5
    assert md.count("\n## ") == 50


def test_pareto_front_respects_lower_is_better_scores():
    pts = [(10, 2.0), (20, 1.5), (15, 2.5)]  # memory (lower better) vs perplexity (lower better)
    assert pareto_front(pts, x_higher_better=False, y_higher_better=False) == [0, 1]


def test_every_headline_memory_column_can_be_plotted(tmp_path):
    from bench.report.frame import MEMORY_COLUMNS
    from bench.results.metrics import table

    assert set(MEMORY_COLUMNS) <= set(table())
    recs = fixture_records()[:3]
    for r in recs:  # CPU records: no NVML, the training RSS peak is the headline
        r["metrics"] = {k: v for k, v in r["metrics"].items() if "nvml" not in k and "torch" not in k}
        r["metrics"]["train_peak_rss_mib"] = 1000.0
    data = pareto_plot(report.with_ratios(report.records_to_frame(recs)), tmp_path / "cpu.png")
    assert data["groups"][0]["panels"][0]["x"] == "train_peak_rss_mib"


def test_report_messages_go_to_stderr_so_stdout_is_pure_markdown(tmp_path, capsys):
    from bench.cli import main

    src = tmp_path / "results.jsonl"
    src.write_text(FIX.joinpath("report_records.jsonl").read_text() + '{"run_id": "torn')
    assert main(["report", str(src), "--csv", str(tmp_path / "r.csv")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# peft-bench report") and "warning" not in out and "wrote" not in out
    assert "torn last line" in err and "wrote" in err


def test_show_and_the_progress_line_write_numbers_as_the_report_does(tmp_path):
    from bench.results.record import Record
    from bench.runner import progress_line
    from conftest import cli

    rec = Record.from_dict(json.loads((FIX / "report_records.jsonl").read_text().splitlines()[0]))
    rec.metrics.update(score_before=None, score_after=11.78, tokens_per_s=1140.4)
    line = progress_line(1, 2, rec, 65)
    assert "score - → 11.8" in line and "1,140 tok/s" in line and "-->" not in line and "e+0" not in line
    assert "train peak 30,614 MiB" in line  # the process tree's NVML peak
    cpu = {"train_peak_rss_mib": 1291.3}
    from bench.results.numbers import headline_memory

    assert headline_memory(cpu) == "1,291 MiB RSS" and headline_memory({}) == "-"
    out = cli("show", str(FIX / "report_records.jsonl")).stdout
    assert "e+0" not in out and "10,235" in out and "2.30 GiB" in out


def test_repeats_keep_score_before_and_the_full_ratios_and_plot_one_point_per_configuration(tmp_path):
    recs = [json.loads(line) for line in (FIX / "report_records.jsonl").read_text().splitlines()]
    ok = [r for r in recs if r["status"] == "success"][:2]  # full and one other method
    seeded = []
    for seed, bump in ((0, 0.0), (1, 0.02), (2, -0.02)):
        for rec in ok:
            r = copy.deepcopy(rec)
            r["run_id"] += f"--s{seed}" if seed else ""
            r["spec"]["seed"] = seed
            r["metrics"]["score_after"] += bump
            r["metrics"]["tokens_per_s"] *= 1 + bump
            seeded.append(r)
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in seeded))
    df = report.load(path)
    md = report.to_markdown(df)
    assert "score before mean ± sd" in md and "speed × full" in md and "| full " in md
    other = ok[1]["spec"]["method_label"]
    row = next(line for line in md.splitlines() if line.startswith(f"| {other} "))
    speed = ok[1]["metrics"]["tokens_per_s"] / ok[0]["metrics"]["tokens_per_s"]
    assert report.fmt_ratio(speed) in row  # the ratio of the means, the same bumps on both sides
    data = pareto_plot(report.with_ratios(df), tmp_path / "p.png")
    (group,) = data["groups"]
    assert [p["seeds"] for p in group["panels"][0]["points"]] == [3, 3] and "y_sd" in group["panels"][0]["points"][0]
