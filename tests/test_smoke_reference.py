"""CI's regression check: the smoke suite's deterministic figures against the committed `reports/smoke.csv`.

The tiny-llama cells of `suites/smoke.yaml` run again (about 30 s) and `peft-bench compare --deterministic` lines
them up with the published report by run id: status, trainable parameters and checkpoint bytes must be exact; the
score (greedy exact match at seed 0) may move by 0.1, since fp32 kernels differ between CPUs (AVX2 vs AMX) and 200
steps amplify the difference. Memory and tokens/s depend on the machine and are not compared.
"""

import pandas as pd
import pytest

from conftest import ROOT, cli, read_jsonl, unexplained_nulls

REFERENCE = ROOT / "reports" / "smoke.csv"


@pytest.mark.slow
def test_smoke_cells_match_the_committed_reference(tmp_path):
    out = tmp_path / "smoke"
    run = cli("run", str(ROOT / "suites" / "smoke.yaml"), "--only", "tiny-llama--*", "--no-forecast", "--out", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    for rec in read_jsonl(out / "results.jsonl"):  # every null metric of every record says why
        assert unexplained_nulls(rec) == [], rec["run_id"]
    res = cli("compare", str(REFERENCE), str(out), "--deterministic", "--score-tolerance", "0.1", "--allow-missing")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tokens_per_s" not in res.stdout and "regression" not in res.stdout
    compared = [line for line in REFERENCE.read_text().splitlines()[1:] if line.startswith("tiny-llama--")]
    assert len(compared) == 7 and "not in NEW" not in "".join(
        line for line in res.stdout.splitlines() if "tiny-llama--" in line
    )


def test_deterministic_compare_still_fails_on_a_changed_count(tmp_path):
    df = pd.read_csv(REFERENCE)
    lora = df["run_id"] == "tiny-llama--reverse--lora-r8--fp32--ga1"
    assert lora.sum() == 1
    df.loc[lora, "trainable_params"] += 1
    path = tmp_path / "new.csv"
    df.to_csv(path, index=False)
    res = cli("compare", str(REFERENCE), str(path), "--deterministic")
    assert res.returncode == 1 and "trainable_params" in res.stdout and "memory and tokens/s not compared" in res.stdout


def test_run_all_writes_only_ignored_paths_and_never_the_committed_reference():
    """`./run_all.sh` leaves `git status` clean: every file it names lies under out/ (git-ignored), none in reports/."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).parent.parent
    script = (root / "run_all.sh").read_text()
    suite_branch = script[script.index("  suite)") :]
    targets = re.findall(r"(?:--out|-o|--csv|--plot|--html|--json)\s+\"([^\"]+)\"", suite_branch)
    assert len(targets) >= 5, targets
    assert all(t.startswith("out/") for t in targets), targets
    assert "reports/" not in "".join(targets)
    ignored = subprocess.run(["git", "check-ignore", "-q", "out/smoke/report.md"], cwd=root)
    assert ignored.returncode == 0  # out/ is ignored
