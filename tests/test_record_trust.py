"""Records a user can trust: one builder for every kind of record, resume keyed on the spec, the right GPU,
safe out-dir names, failed saves that keep the measured cell, one checkpoint per run dir, honest forgetting,
and a full disk that stops the suite without damage."""

import json
import os

import pytest

import fake_nvml
from bench.execution.gpus import GpuSelectionError, resolve_slots
from bench.results import store
from bench.results.cell_result import CellResult
from bench.results.record import CellExit, Record, Status, build_record
from bench.results.rundir import RunDir
from bench.runner import RunOptions, resume_todo, run_specs
from bench.suite.load import expand, load_suite
from bench.suite.spec import RunSpec
from conftest import SPEC_BASE, cli, make_suite, read_jsonl, run_cell_inproc

SPEC = RunSpec.from_dict(SPEC_BASE)
OK = {"status": "success", "metrics": {"tokens_per_s": 10.0}, "timings": {"time_train_s": 1.0}, "child_pid": 42}
OK_CHILD = CellResult.from_dict(OK)


@pytest.mark.parametrize(
    "child, exit, status, error_type",
    [
        (OK, CellExit(0), Status.SUCCESS, None),
        (
            {"status": "unsupported", "error": {"type": "Unsupported", "message": "fp16 needs CUDA"}},
            CellExit(0),
            Status.UNSUPPORTED,
            "Unsupported",
        ),
        (
            {"status": "oom", "error": {"type": "OutOfMemoryError", "message": "CUDA out of memory"}},
            CellExit(0),
            Status.OOM,
            "OutOfMemoryError",
        ),
        (
            {"status": "failed", "error": {"type": "ValueError", "message": "bad"}},
            CellExit(0),
            Status.FAILED,
            "ValueError",
        ),
        (None, CellExit(-9), Status.FAILED, "signal"),
        (None, CellExit(7, stderr_tail="boom"), Status.FAILED, "exit"),
        (None, CellExit(-9, stderr_tail="torch.OutOfMemoryError: CUDA out of memory"), Status.OOM, "signal"),
        (None, CellExit(None, Status.TIMEOUT, "cell timeout after 5 s"), Status.TIMEOUT, "timeout"),
        (None, CellExit(None, Status.CANCELED, "canceled by a signal"), Status.CANCELED, "canceled"),
        (None, CellExit(None, Status.FAILED, "job 12 never started: node failure"), Status.FAILED, "failed"),
    ],
    ids=[
        "success",
        "unsupported",
        "oom",
        "exception",
        "signal",
        "exit",
        "oom-by-stderr",
        "timeout",
        "canceled",
        "never-started",
    ],
)
def test_every_kind_of_record_comes_from_the_one_builder_and_round_trips(child, exit, status, error_type):
    parent = {
        "metrics": {"peak_nvml_mib": None},
        "missing_reason": {"peak_nvml_mib": "no GPU"},
        "attempt": 1,
        "run_dir": "/x",
    }
    rec = build_record(SPEC, CellResult.from_dict(child) if child else None, exit, parent)
    assert rec.status == status and rec.run_id == SPEC.run_id and rec.spec_hash == SPEC.spec_hash
    assert (rec.error or {}).get("type") == error_type
    data = json.loads(json.dumps(rec.to_dict()))
    assert data["status"] == str(status) and Record.from_dict(data) == rec
    if exit.exit_code is not None and exit.exit_code < 0:
        assert rec.error["signal"] == 9 and "SIGKILL" in rec.error["message"]


def test_builder_rejects_unknown_parent_fields():
    with pytest.raises(TypeError, match="unknown parent field 'atempt'"):
        build_record(SPEC, OK_CHILD, CellExit(0), {"atempt": 1})


def test_old_records_still_read():
    rec = Record.from_dict({"run_id": "a", "status": "success", "schema_version": 1, "metrics": {"x": 1}})
    assert rec.status == Status.SUCCESS and rec.notes == [] and rec.phases == {}


def finished_record(spec: RunSpec) -> dict:
    return build_record(spec, OK_CHILD, CellExit(0)).to_dict()


def test_resume_reruns_a_cell_whose_spec_changed_under_the_same_run_id():
    old = finished_record(SPEC)
    same, changed = SPEC, RunSpec.from_dict({**SPEC_BASE, "steps": 9})
    assert same.run_id == changed.run_id
    todo, skipped, notices = resume_todo([same], [old], force=False)
    assert todo == [] and skipped == 1 and notices == []
    todo, skipped, notices = resume_todo([changed], [old], force=False)
    assert todo == [changed] and skipped == 0
    assert "steps 4 -> 9" in notices[0] and changed.run_id in notices[0]


def test_an_edit_that_changes_no_cell_reruns_nothing():
    edited = RunSpec.from_dict({**SPEC_BASE, "suite_hash": "another-file-hash", "timeout_s": 999})
    assert resume_todo([edited], [finished_record(SPEC)], force=False)[0] == []


def test_run_id_holds_every_axis_that_tells_cells_apart():
    base = RunSpec.from_dict(SPEC_BASE)
    ckpt = RunSpec.from_dict({**SPEC_BASE, "grad_ckpt": True})
    seeded = RunSpec.from_dict({**SPEC_BASE, "seed": 2})
    assert len({base.run_id, ckpt.run_id, seeded.run_id}) == 3
    assert ckpt.run_id.endswith("--gc") and seeded.run_id.endswith("--s2")


class TwoGpus:
    def device_count(self):
        return 2

    def uuid(self, i):
        return f"GPU-uuid-{i}"

    def name(self, i):
        return f"Card{i}"


def test_inherited_visible_devices_are_honoured_in_their_order():
    slots = resolve_slots(TwoGpus(), None, "1,0")
    assert [(s.index, s.uuid) for s in slots] == [(1, "GPU-uuid-1"), (0, "GPU-uuid-0")]
    assert slots[0].cell_env() == {"CUDA_VISIBLE_DEVICES": "GPU-uuid-1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert [s.index for s in resolve_slots(TwoGpus(), None, "GPU-uuid-1")] == [1]
    assert resolve_slots(TwoGpus(), None, "") == [None]  # an empty allocation: no GPU
    with pytest.raises(GpuSelectionError, match="GPU\\(s\\) \\[0\\] not available"):
        resolve_slots(TwoGpus(), [0], "1")
    with pytest.raises(GpuSelectionError, match="index 3"):
        resolve_slots(TwoGpus(), None, "3")


@pytest.mark.slow
def test_cells_sample_the_gpu_their_inherited_allocation_names(tmp_path):
    fake = {"devices": [{"name": "A", "used_mib": 10}, {"name": "B", "used_mib": 20}]}
    path = make_suite(tmp_path, {"method": ["full", "bitfit"], "model": ["tiny-bert"]})
    from conftest import cli

    env = {**fake_nvml.env(fake), "CUDA_VISIBLE_DEVICES": "1"}
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--no-fit-check", env=env)
    assert res.returncode == 0, res.stderr
    for rec in read_jsonl(tmp_path / "out" / "results.jsonl"):
        assert rec["gpu_index"] == 1 and rec["env"]["nvml_gpu_name"] == "B"
        assert rec["env"]["cuda_visible_devices"] == "GPU-fake-1" and rec["metrics"]["baseline_nvml_mib"] == 20


def test_suite_names_are_slugged_for_paths(tmp_path):
    from bench.suite.spec import slug

    assert slug("../x") == "_x" and "/" not in slug("/etc/passwd") and slug("..") == "_"


def test_attempts_keep_only_the_latest_checkpoint(tmp_path):
    rd = RunDir(tmp_path / "cell")
    assert rd.new_attempt() == 1
    (rd.checkpoint).mkdir()
    (rd.checkpoint / "big.safetensors").write_bytes(b"x" * 1000)
    rd.spec.write_text("{}")
    assert rd.new_attempt() == 2
    assert (rd.attempts / "1" / "spec.json").exists() and not (rd.attempts / "1" / "checkpoint").exists()


def test_a_failed_save_keeps_the_cell_a_success_with_the_reason(tmp_path, fault_env):
    res = run_cell_inproc(tmp_path, method="fault-badsave")
    assert res["status"] == "success", res.get("error")
    assert res["metrics"]["checkpoint_bytes"] is None
    assert "checkpoint save failed: OSError" in res["missing_reason"]["checkpoint_bytes"]
    assert "No space left" in res["checkpoint"]["error"] and res["metrics"]["score_after"] is not None


def test_forgetting_compares_the_same_attachment_state(tmp_path):
    """An untrained soft prompt (lr 0) forgets nothing: before and after are both measured with it attached."""
    res = run_cell_inproc(
        tmp_path,
        model="tiny-llama",
        task="reverse",
        method="prompt",
        lr=0.0,
        steps=2,
        task_options={"n_train": 16, "n_eval": 4},
    )
    assert res["status"] == "success", res.get("error")
    assert res["metrics"]["forgetting_delta"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_disk_full_stops_the_suite_cleanly_and_resume_continues(tmp_path, monkeypatch):
    path = make_suite(tmp_path, {"method": ["full", "bitfit"], "model": ["tiny-bert"]})
    real = store.append_record
    calls = []

    def full_on_first(out, rec):
        calls.append(rec.run_id)
        if len(calls) == 1:
            raise store.DiskFull("cannot append: No space left on device; free space and rerun to resume")
        real(out, rec)

    (tmp_path / "out").mkdir()
    real(tmp_path / "out", build_record(expand(load_suite(path))[0], OK_CHILD, CellExit(0)))  # one finished before
    monkeypatch.setattr(store, "append_record", full_on_first)
    specs = expand(load_suite(path))
    summary = run_specs(specs, RunOptions(out_dir=tmp_path / "out"), progress=lambda s: None)
    assert summary.exit_code() == 1 and "No space left" in summary.stopped and summary.ran == 0
    assert len(calls) == 1  # no cell started after the disk filled up
    assert len(read_jsonl(tmp_path / "out" / "results.jsonl")) == 1  # what was written before is intact
    monkeypatch.setattr(store, "append_record", real)
    summary = run_specs(specs, RunOptions(out_dir=tmp_path / "out"), progress=lambda s: None)
    assert summary.skipped == 1 and summary.ran == 1
    assert sorted(r["run_id"] for r in read_jsonl(tmp_path / "out" / "results.jsonl")) == sorted(
        s.run_id for s in specs
    )


def test_local_files_are_hashed_by_content_not_by_path(tmp_path):
    """A config.json edited in place, or a teacher retrained into the same folder, reruns its cells."""
    cfg = tmp_path / "model.json"
    cfg.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 32,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "vocab_size": 256,
            }
        )
    )
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text("{}")
    (teacher / "model.safetensors").write_bytes(b"x" * 100)
    matrix = {"model": [str(cfg)], "method": [{"name": "distill", "teacher": str(teacher), "alpha": 0.5}]}
    path = make_suite(tmp_path, matrix)

    def spec():
        return expand(load_suite(path))[0]

    old = finished_record(spec())
    assert resume_todo([spec()], [old], force=False)[0] == []  # nothing changed: nothing reruns
    cfg.write_text(cfg.read_text().replace("128", "96"))
    assert resume_todo([spec()], [old], force=False)[0] == [spec()]
    old = finished_record(spec())
    (teacher / "model.safetensors").write_bytes(b"x" * 120)  # retrained: other weights
    assert resume_todo([spec()], [old], force=False)[0] == [spec()]
    old = finished_record(spec())
    os.utime(teacher / "model.safetensors", (0, 0))  # a touch is not content
    assert resume_todo([spec()], [old], force=False)[0] == []


def test_the_allocator_is_cleaned_before_the_training_window_opens(tmp_path, monkeypatch):
    """empty_cache and the peak reset run before the train phase is marked, so early training samples cannot hold
    eval's cached blocks."""
    import time

    import bench.cell.steps as steps
    from bench.trackers.phases import Phase

    train = next(s for s in steps.STEPS if s.phase == Phase.TRAIN)
    assert train.before is steps.before_training
    cleaned = []
    monkeypatch.setattr(steps, "clean_allocator", cleaned.append)
    fake_cell = type("C", (), {"spec": type("S", (), {"memory_limit_mib": None})()})()
    steps.before_training(fake_cell)
    assert cleaned == [fake_cell]  # the allocator is cleaned in the step's `before`
    monkeypatch.undo()
    events = {}
    fake = steps.Step(
        Phase.TRAIN,
        lambda c: events.setdefault("run", time.time()),
        before=lambda c: events.setdefault("before", time.time()),
    )
    monkeypatch.setattr(steps, "STEPS", (fake,))
    span = run_cell_inproc(tmp_path / "c")["phases"]["train"]
    assert events["before"] <= span["start_unix"] <= events["run"]


def test_a_failed_save_is_shown_and_retried(tmp_path, fault_env):
    from bench import report

    path = make_suite(tmp_path, {"method": ["fault-badsave"]})
    out = tmp_path / "out"
    first = cli("run", str(path), "--out", str(out), env=fault_env)
    assert first.returncode == 0 and "CHECKPOINT NOT SAVED" in first.stdout, first.stdout + first.stderr
    assert "**not saved**" in report.to_markdown(report.load(out))
    cli("run", str(path), "--out", str(out), env=fault_env)
    assert len(read_jsonl(out / "results.jsonl")) == 2  # retried, not skipped
