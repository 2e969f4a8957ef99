"""results.jsonl: one write per record with fsync, no line ever glued to a torn tail, a reader that names what it
skips, a full disk that damages nothing, and the out-dir lock."""

import errno
import json
import os
import subprocess
import sys

import pytest

from bench import SCHEMA_VERSION
from bench.results import store
from bench.results.record import Record, Status


def rec(run_id: str, status: str = "success") -> Record:
    return Record(run_id=run_id, status=Status(status))


def test_torn_last_line_keeps_complete_records_and_warns(tmp_path):
    for i in range(3):
        store.append_record(tmp_path, rec(f"r{i}"))
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write('{"run_id": "r3", "status": "succ')  # power loss mid-write
    read = store.read_records(tmp_path)
    assert [r["run_id"] for r in read.records] == ["r0", "r1", "r2"]
    assert read.skipped_lines == [4] and "results.jsonl:4: torn last line" in read.warnings[0]


def test_append_after_a_torn_tail_keeps_the_new_record(tmp_path):
    store.append_record(tmp_path, rec("r0"))
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write('{"run_id": "r1", "stat')  # the crash left no newline
    store.append_record(tmp_path, rec("r2"))
    read = store.read_records(tmp_path)
    assert [r["run_id"] for r in read.records] == ["r0", "r2"]
    assert read.skipped_lines == [2] and "unreadable line" in read.warnings[0]


def test_every_record_carries_the_schema_version(tmp_path):
    store.append_record(tmp_path, rec("a", "failed"))
    line = json.loads((tmp_path / "results.jsonl").read_text())
    assert line["schema_version"] == SCHEMA_VERSION and line["status"] == "failed"


def test_finished_is_success_and_unsupported_only():
    recs = [{"run_id": k, "status": s} for k, s in zip("abcd", ["success", "oom", "unsupported", "canceled"])]
    assert set(store.finished(recs)) == {"a", "c"}


def test_disk_full_on_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    store.append_record(tmp_path, rec("r0"))
    before = (tmp_path / "results.jsonl").read_bytes()
    real_write = os.write

    def full(fd, data):
        real_write(fd, data[: len(data) // 2])  # half of the line reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", full)
    with pytest.raises(store.DiskFull, match="No space left on device.*rerun to resume"):
        store.append_record(tmp_path, rec("r1"))
    monkeypatch.setattr(store.os, "write", real_write)
    assert (tmp_path / "results.jsonl").read_bytes() == before
    store.append_record(tmp_path, rec("r1"))
    assert [r["run_id"] for r in store.read_records(tmp_path).records] == ["r0", "r1"]


def test_second_lock_holder_is_refused_with_the_first_pid(tmp_path):
    code = (
        "import sys, time; from bench.results.store import OutDirLock\n"
        "with OutDirLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(store.LockHeld) as err:
            with store.OutDirLock(tmp_path):
                pass
        assert f"PID {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with store.OutDirLock(tmp_path):  # released when the holder dies
        assert (tmp_path / ".lock").read_text() == str(os.getpid())


def test_the_latest_attempt_decides_and_a_fit_check_refusal_is_no_verdict():
    recs = [
        {"run_id": "a", "status": "success"},
        {"run_id": "a", "status": "timeout"},  # a --force rerun that hung: the cell is not finished any more
        {"run_id": "b", "status": "unsupported", "error": {"type": "FitCheck", "message": "estimated 9 GiB > 1"}},
        {"run_id": "c", "status": "failed"},
        {"run_id": "c", "status": "success"},
    ]
    assert set(store.finished(recs)) == {"c"}
