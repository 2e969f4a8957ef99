"""Records: append-only JSONL with fsync, a tolerant reader, and the out-dir lock."""

import json
import os
import subprocess
import sys

import pytest

from bench import records


def test_torn_last_line_keeps_complete_records_and_warns(tmp_path):
    for i in range(3):
        records.append_record(tmp_path, {"run_id": f"r{i}", "status": "success"})
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write('{"run_id": "r3", "status": "succ')  # power loss mid-write
    read = records.read_records(tmp_path)
    assert [r["run_id"] for r in read.records] == ["r0", "r1", "r2"]
    assert len(read.warnings) == 1 and "torn last line" in read.warnings[0]


def test_every_record_carries_the_schema_version(tmp_path):
    records.append_record(tmp_path, {"run_id": "a", "status": "failed"})
    rec = json.loads((tmp_path / "results.jsonl").read_text())
    assert rec["schema_version"] == 1


def test_finished_ids_are_success_and_unsupported_only():
    recs = [
        {"run_id": "a", "status": "success"},
        {"run_id": "b", "status": "oom"},
        {"run_id": "c", "status": "unsupported"},
        {"run_id": "d", "status": "canceled"},
    ]
    assert records.finished_ids(recs) == {"a", "c"}


def test_second_lock_holder_is_refused_with_the_first_pid(tmp_path):
    code = (
        "import sys, time; from bench.records import OutDirLock\n"
        "with OutDirLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(records.LockHeld) as err:
            with records.OutDirLock(tmp_path):
                pass
        assert f"PID {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with records.OutDirLock(tmp_path):  # released when the holder dies
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
