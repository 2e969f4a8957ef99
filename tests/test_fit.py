"""`peft-bench fit`: the largest seq_len each method trains under a memory limit, found by search in isolated cells,
checked against a brute-force scan of the same candidates (real probes, run once; the search then reuses them)."""

from __future__ import annotations

import json

import pytest

from bench.fit import candidates, probe_spec, search
from conftest import cli, make_suite

# parameters (9M, 4k vocabulary) heavy enough that full fine-tuning's gradients and AdamW state cost seq_len
CONFIG = {
    "model_type": "llama", "vocab_size": 4096, "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 4096, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
}  # fmt: skip
LIMIT_MIB, GRID = 300, (128, 384, 128)  # the largest needs ~390 MiB: a margin beyond CPU noise (~40 MiB)


def test_search_brackets_the_boundary_from_any_start():
    grid = list(range(10))
    for boundary in range(-1, 10):  # the largest index that fits (-1: none does)
        for start in range(10):
            seen = []

            def probe(i, seen=seen, boundary=boundary):
                seen.append(i)
                return "success" if i <= boundary else "oom"

            ok, bad, err = search(grid, start, probe)
            assert err is None and ok == (boundary if boundary >= 0 else None)
            assert bad == (boundary + 1 if boundary < 9 else None)
            assert len(seen) <= 8  # exponential walk + bisection, never the whole grid


@pytest.mark.slow
def test_fit_finds_the_boundary_a_brute_force_scan_finds_and_lora_fits_more_than_full(tmp_path):
    from bench.runner import RunOptions, run_specs
    from bench.suite.load import load_suite
    from bench.suite.matrix import expand

    model = tmp_path / "wide.json"
    model.write_text(json.dumps(CONFIG))
    suite = make_suite(
        tmp_path,
        {"model": [str(model)], "method": ["full", {"name": "lora", "r": 8}]},
        name="fits",
        task={"name": "random-lm", "n_train": 8, "n_eval": 4},
        batch_size=4,
    )
    grid = candidates("seq_len", *GRID)
    specs = expand(load_suite(suite))
    probes = tmp_path / "out" / "probes"
    brute = [probe_spec(s, "seq_len", v, LIMIT_MIB) for s in specs for v in grid]
    run_specs(brute, RunOptions(out_dir=probes), progress=lambda line: None)  # every candidate, one real cell each
    from bench.results.store import latest_by_run_id, read_records

    status = {r["run_id"]: r["status"] for r in latest_by_run_id(read_records(probes).records).values()}
    expected = {}
    for s in specs:
        fits = [v for v in grid if status[probe_spec(s, "seq_len", v, LIMIT_MIB).run_id] == "success"]
        assert fits and fits[-1] < grid[-1], (s.method, status)  # the limit bites inside the grid
        expected[s.method] = fits[-1]
    lo, hi, step = GRID
    res = cli("fit", str(suite), "--min", str(lo), "--max", str(hi), "--step", str(step),
              "--memory-limit-mib", str(LIMIT_MIB), "--out", str(tmp_path / "out"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    found = {r["method"].split("-")[0]: r for r in json.loads((tmp_path / "out" / "fit.json").read_text())}
    for method, best in expected.items():
        assert abs(grid.index(found[method]["fits"]) - grid.index(best)) <= 1, (method, found[method], best)
        assert found[method]["fails"] == grid[grid.index(found[method]["fits"]) + 1]
    assert found["lora"]["fits"] >= found["full"]["fits"]
    assert "| max seq_len |" in res.stdout.replace("   ", " ") or "max seq_len" in res.stdout
