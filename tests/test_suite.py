"""Suite loading, validation and expansion (no cells run)."""

from pathlib import Path

import pytest
import yaml

from bench.cli import main as cli_main
from bench.errors import SuiteError
from bench.suite.load import expand, load_suite
from conftest import make_suite


def test_matrix_expands_to_every_combination_with_readable_run_ids(tmp_path):
    path = make_suite(
        tmp_path,
        {"model": ["tiny-llama", "tiny-bert"], "method": ["full", {"name": "lora", "r": 8}], "grad_accum": [1, 2]},
    )
    specs = expand(load_suite(path))
    assert len(specs) == 8
    assert specs[2].run_id == "tiny-llama--toy-cls--lora-r8--fp32--ga1"
    assert len({s.run_id for s in specs}) == 8
    assert specs[2].method_options == {"r": 8}


def test_run_id_is_deterministic_and_spec_round_trips(tmp_path):
    from bench.suite.spec import RunSpec

    path = make_suite(tmp_path, {"method": [{"name": "lora", "r": 8, "alpha": 16}]})
    a, b = expand(load_suite(path)), expand(load_suite(path))
    assert a == b
    assert RunSpec.from_json(a[0].to_json()) == a[0]


def test_exclude_and_include(tmp_path):
    data = {
        "name": "x",
        "defaults": {"steps": 4, "task": "toy-cls", "model": "tiny-llama", "grad_accum": 1},
        "matrix": {"method": ["full", "lora"], "precision": ["fp32", "bf16"]},
        "exclude": [{"method": "full", "precision": "bf16"}],
        "include": [{"method": {"name": "lora", "r": 2}, "precision": "fp32"}],
    }
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    ids = [s.run_id for s in expand(load_suite(path))]
    assert "tiny-llama--toy-cls--full--bf16--ga1" not in ids
    assert ids[-1] == "tiny-llama--toy-cls--lora-r2--fp32--ga1"
    assert len(ids) == 4


@pytest.mark.parametrize(
    "matrix, defaults, expected",
    [
        ({"modle": ["tiny-llama"]}, {}, "matrix.modle: unknown axis (did you mean 'model'?)"),
        ({"method": ["lroa"]}, {}, "unknown method 'lroa' (did you mean 'lora'?)"),
        ({}, {"steps": "ten"}, "defaults.steps: expected int, got str 'ten'"),
        ({"method": [{"name": "lora", "rank": 8}]}, {}, "method.rank: unknown option"),
        ({"model": ["tiny-lama"]}, {}, "unknown model 'tiny-lama' (did you mean 'tiny-llama'?)"),
        ({"task": ["toy-clss"]}, {}, "unknown task 'toy-clss' (did you mean 'toy-cls'?)"),
        ({"precision": ["bf61"]}, {}, "unknown precision 'bf61'"),
        ({"grad_accum": [3]}, {}, "batch_size 4 is not divisible by grad_accum 3"),
        ({"method": ["full"], "precision": ["nf4"]}, {}, "cannot train a nf4-quantized base"),
        ({"method": ["qlora"], "precision": ["bf16"]}, {}, "method 'qlora' needs precision nf4"),
        ({}, {"stepz": 3}, "defaults.stepz: unknown key (did you mean 'steps'?)"),
    ],
)
def test_bad_suite_names_the_key_and_choices(tmp_path, matrix, defaults, expected):
    path = make_suite(tmp_path, {"method": ["lora"], **matrix}, **defaults)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert any(expected in p and str(path) in p for p in err.value.problems), err.value.problems


def test_malformed_yaml_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmatrix:\n  model: [tiny-llama\n  method: lora\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert f"{path}:" in err.value.problems[0] and "malformed YAML" in err.value.problems[0]
    assert err.value.problems[0].split(":")[1].isdigit()


def test_cli_bad_suite_exits_2_one_line_per_problem_before_any_cell(tmp_path, capsys):
    path = make_suite(tmp_path, {"modle": ["tiny-llama"], "method": ["lroa"]}, steps="ten")
    rc = cli_main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) >= 3 and all(line.startswith("error: ") for line in err)
    assert any("did you mean 'lora'" in line for line in err)
    assert any("defaults.steps" in line for line in err)
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_cells_and_count(tmp_path, capsys):
    path = make_suite(tmp_path, {"method": ["full", "lora"], "grad_accum": [1, 2]})
    assert cli_main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells" in out and "tiny-llama--toy-cls--full--fp32--ga2" in out


def test_overrides_are_type_checked(tmp_path, capsys):
    path = make_suite(tmp_path, {"method": ["full"]})
    assert cli_main(["run", str(path), "--dry-run", "steps=abc"]) == 2
    assert "override steps: expected int" in capsys.readouterr().err
    assert cli_main(["run", str(path), "--dry-run", "steps=7", "precision=[fp32,bf16]"]) == 0
    assert "2 cells" in capsys.readouterr().out


def test_only_selects_cells(tmp_path, capsys):
    path = make_suite(tmp_path, {"method": ["full", "lora"]})
    assert cli_main(["run", str(path), "--dry-run", "--only", "*lora*"]) == 0
    assert "1 cells" in capsys.readouterr().out


def test_method_entry_may_set_its_own_learning_rate(tmp_path):
    path = make_suite(tmp_path, {"method": ["full", {"name": "lora", "r": 4, "lr": 0.003}]}, lr=0.0002)
    full, lora = expand(load_suite(path))
    assert full.lr == 0.0002 and lora.lr == 0.003
    assert lora.method_options == {"r": 4} and lora.run_id.split("--")[2] == "lora-r4"
    bad = make_suite(tmp_path, {"method": [{"name": "lora", "lr": "fast"}]}, name="bad")
    with pytest.raises(SuiteError, match="method\\[0\\].lr: expected float"):
        load_suite(bad)


def test_entries_override_training_defaults_method_over_task_over_model(tmp_path):
    data = {
        "name": "o",
        "defaults": {"steps": 10, "lr": 0.001, "precision": "fp32", "grad_accum": 1},
        "matrix": {
            "model": [{"name": "tiny-llama", "seq_len": 8}],
            "task": [{"name": "reverse", "steps": 200, "batch_size": 32, "length": 3}],
            "method": ["full", {"name": "lora", "lr": 0.005, "steps": 300}],
        },
    }
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump(data))
    full, lora = expand(load_suite(path))
    assert (full.steps, full.batch_size, full.seq_len, full.lr) == (200, 32, 8, 0.001)
    assert (lora.steps, lora.lr) == (300, 0.005)
    assert full.task_options == {"length": 3} and lora.method_options == {}


def test_trust_remote_code_is_off_unless_the_suite_sets_it(tmp_path, monkeypatch):
    import transformers

    from bench.models import loading

    monkeypatch.setattr(loading, "hub_unreachable", lambda: None)  # as if the hub answered
    seen = []

    def fake_from_pretrained(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    for options in ({}, {"trust_remote_code": True}):
        with pytest.raises(RuntimeError, match="stop here"):
            loading.load_model("org/some-model", "causal_lm", None, 0, options=options)
    assert seen == [False, True]
    bad = make_suite(tmp_path, {"model": [{"name": "tiny-llama", "trust_remote_cod": True}]})
    with pytest.raises(SuiteError, match="unknown model option"):
        load_suite(bad)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_suite_loads_and_expands(path, monkeypatch):
    monkeypatch.chdir(path.parents[1])  # suites name repo-relative paths (shapes, the teacher checkpoint)
    if path.stem == "distill-minilm" and not Path("out/teacher-minilm").exists():
        with pytest.raises(SuiteError, match="out/teacher-minilm"):  # step 2 of 2: step 1 writes the teacher
            load_suite(path)
        return
    specs = expand(load_suite(path))
    assert specs
    from bench.plan.checks import config_problems

    problems, _ = config_problems(specs)  # every cell against its model's config (positions, causal mask)
    assert problems == []


def bert_config(tmp_path, **kw):
    import json

    cfg = {
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 1000,
        "max_position_embeddings": 64,
        **kw,
    }
    path = tmp_path / "bert.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_seq_len_beyond_absolute_positions_is_refused_at_load_naming_the_limit(tmp_path, capsys):
    model = bert_config(tmp_path)
    suite = make_suite(tmp_path, {"model": [model], "method": ["lora"]}, seq_len=128)
    assert cli_main(["run", str(suite), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "seq_len 128 needs 128 positions" in err and "absolute position embeddings for 64" in err and model in err
    prompt = make_suite(
        tmp_path, {"model": [model], "method": [{"name": "prompt", "num_virtual_tokens": 8}]}, name="p", seq_len=60
    )
    assert cli_main(["run", str(prompt), "--dry-run"]) == 2
    assert "seq_len 60 + 8 virtual tokens needs 68 positions" in capsys.readouterr().err


def test_rope_models_past_their_positions_get_a_note_not_a_refusal(tmp_path, capsys):
    suite = make_suite(tmp_path, {"model": ["tiny-llama"], "method": ["lora"]}, seq_len=600, task={"name": "random-lm"})
    assert cli_main(["run", str(suite), "--dry-run"]) == 0
    assert "RoPE: allowed" in capsys.readouterr().err


def test_a_bidirectional_encoder_is_no_causal_lm(tmp_path, capsys):
    from bench.models import sources

    assert sources.supported_kinds("minilm-l6") == ("seq_cls",)
    encoder = make_suite(tmp_path, {"model": [bert_config(tmp_path)], "method": ["lora"]}, task={"name": "reverse"})
    assert cli_main(["run", str(encoder), "--dry-run"]) == 2
    assert "bidirectional encoder" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    decoder = make_suite(
        tmp_path / "d",
        {"model": [bert_config(tmp_path / "d", is_decoder=True)], "method": ["lora"]},
        task={"name": "reverse"},
    )
    assert cli_main(["run", str(decoder), "--dry-run"]) == 0


def test_the_cell_checks_the_config_it_loaded(tmp_path):
    """What the suite could not check (a hub config offline) the cell refuses: unsupported, with the reason."""
    from conftest import run_cell_inproc

    res = run_cell_inproc(tmp_path / "cell", model=bert_config(tmp_path), task="reverse", task_options={})
    assert res["status"] == "unsupported" and "bidirectional encoder" in res["error"]["message"]


def test_a_list_in_a_method_option_is_a_sweep_with_readable_run_ids(tmp_path):
    methods = [
        {"name": "lora", "r": [4, 8, 16]},
        {"name": "full", "lr": [1e-5, 3e-5]},
        {"name": "lora", "target_modules": ["q_proj", "v_proj"]},  # a list-typed option: one value, no sweep
        {"name": "ia3", "label": "mine", "lr": [0.01, 0.02]},
    ]
    specs = expand(load_suite(make_suite(tmp_path, {"method": methods})))
    labels = [s.method_label for s in specs]
    assert labels[:5] == ["lora-r4", "lora-r8", "lora-r16", "full-lr1e-05", "full-lr3e-05"]
    assert labels[6:] == ["mine-lr0.01", "mine-lr0.02"] and len(specs) == 8
    assert [s.method_options.get("r") for s in specs[:3]] == [4, 8, 16] and specs[4].lr == 3e-5
    assert specs[5].method_options["target_modules"] == ["q_proj", "v_proj"]
