"""The wall-time forecast printed before a suite runs: earlier records where there are some, a FLOP model from a
quick probe where not, about a second for cells that will be unsupported."""

import dataclasses

from test_cpu_precision import AVX2_ONLY

from bench.env import cpu as cpuinfo
from bench.plan import forecast
from bench.suite.spec import RunSpec
from conftest import make_suite


def spec(**kw):
    return RunSpec(
        **{
            "suite": "w",
            "model": "tiny-llama",
            "task": "toy-cls",
            "method": "full",
            "precision": "fp32",
            "grad_accum": 1,
            **kw,
        }
    )


def test_earlier_records_give_the_estimate_without_a_probe(monkeypatch):
    monkeypatch.setattr(forecast, "probe_gflops", lambda: (_ for _ in ()).throw(AssertionError("probed")))
    est = forecast.forecast([spec()], {spec().run_id: {"duration_s": 42.0}})
    assert est.seconds == 42.0 + forecast.RUNNER_OVERHEAD_S and est.from_records == 1 and est.modelled == 0
    assert "1 from earlier records" in est.line(1)


def test_the_model_scales_with_work_and_knows_unsupported_cells(monkeypatch):
    monkeypatch.setattr(forecast, "probe_gflops", lambda: 100.0)
    monkeypatch.setattr(cpuinfo, "facts", lambda: AVX2_ONLY)
    small, big = forecast.forecast([spec(steps=10)], {}), forecast.forecast([spec(steps=1000)], {})
    assert big.seconds > small.seconds > forecast.RUNNER_OVERHEAD_S
    bf16 = forecast.forecast([spec(precision="bf16")], {})
    assert bf16.seconds == forecast.RUNNER_OVERHEAD_S + 1.0  # no native bf16 here: it will be unsupported
    native = dataclasses.replace(AVX2_ONLY, native_bf16=True)
    monkeypatch.setattr(cpuinfo, "facts", lambda: native)
    assert forecast.forecast([spec(precision="bf16")], {}).seconds > bf16.seconds
    assert "modelled from a 100 GFLOP/s fp32 probe" in small.line(1)


def test_run_prints_the_estimate_before_the_first_cell(tmp_path, capsys, monkeypatch):
    from bench import runner
    from bench.cli import main

    monkeypatch.setattr(runner, "run_specs", lambda *a, **k: runner.RunSummary())
    path = make_suite(tmp_path, {"method": ["full"]})
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "forecast wall time on this machine: ~" in out and "for 1 cells" in out


def test_other_cells_records_calibrate_the_model_and_the_range_is_printed(monkeypatch):
    monkeypatch.setattr(forecast, "probe_gflops", lambda: 100.0)
    monkeypatch.setattr(cpuinfo, "facts", lambda: AVX2_ONLY)
    done, todo = spec(seed=1, steps=50), spec(steps=50)
    plain = forecast.forecast([todo], {})
    modelled = plain.seconds - forecast.RUNNER_OVERHEAD_S
    earlier = {done.run_id: {"status": "success", "duration_s": 3 * modelled, "spec": done.to_dict()}}
    calibrated = forecast.forecast([todo], earlier)  # the same work took 3x the model on this machine
    assert abs((calibrated.seconds - forecast.RUNNER_OVERHEAD_S) / modelled - 3.0) < 1e-6
    low, high = forecast.MODEL_RANGE
    assert calibrated.low < calibrated.seconds < calibrated.high
    assert abs(calibrated.high - forecast.RUNNER_OVERHEAD_S - 3 * modelled * high) < 1e-6
    assert " – " in calibrated.line(1) and "(" in calibrated.line(1)
