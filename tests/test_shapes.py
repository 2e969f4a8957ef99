"""Cost cells for any architecture without its weights: config-only directories and config files, counted on the
meta device, built with seeded random weights, and the shapes suite expanding offline."""

import json
from pathlib import Path

import pytest

from bench.models.configs import CONFIGS
from conftest import ROOT, cli, run_cell_inproc

SHAPES = {
    "llama-3.2-3b": 3_212_749_824,
    "llama-3.1-8b": 8_030_261_248,
    "qwen2.5-7b": 7_615_616_512,
    "llama-3.1-70b": 70_553_706_496,
    "roberta-base": 124_647_170,  # with its 2-label head
}


def config_only_dir(tmp_path: Path) -> Path:
    d = tmp_path / "only-config"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(CONFIGS["tiny-llama"]))
    return d


def test_a_directory_with_only_config_json_trains_with_random_weights(tmp_path):
    d = config_only_dir(tmp_path)
    res = run_cell_inproc(
        tmp_path / "cell", model=str(d), model_options={"weights": "random"}, task="random-lm", method="lora", steps=2
    )
    assert res["status"] == "success", res.get("error")
    info = res["model_info"]
    assert info["random_weights"] is True and info["source"] == "dir"
    assert info["config_source"] == str(d.resolve()) and len(info["config_sha256"]) == 16


def test_a_config_file_is_a_model_source_with_random_weights(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(CONFIGS["tiny-bert"]))
    res = run_cell_inproc(tmp_path / "cell", model=str(path), method="bitfit", model_options={}, steps=2)
    assert res["status"] == "success", res.get("error")
    assert res["model_info"]["source"] == "config_file" and res["model_info"]["random_weights"] is True


def test_a_config_file_cannot_claim_pretrained_weights(tmp_path):
    from bench.models.sources import resolve_source

    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="a config file has no weights"):
        resolve_source(str(path), {"weights": "pretrained"})
    with pytest.raises(ValueError, match="weights 'randm' is not one of pretrained, random"):
        resolve_source(str(path), {"weights": "randm"})


@pytest.mark.parametrize(
    "method, options",
    [("lora", {"r": 4}), ("ia3", {}), ("prompt", {"num_virtual_tokens": 5}), ("prefix", {"num_virtual_tokens": 5})],
)
def test_trainable_counts_on_a_config_only_model_equal_peft_on_the_meta_device(tmp_path, method, options):
    import peft
    import torch
    import transformers

    d = config_only_dir(tmp_path)
    res = run_cell_inproc(
        tmp_path / "cell",
        model=str(d),
        model_options={"weights": "random"},
        task="random-lm",
        method=method,
        method_options=options,
        steps=2,
    )
    assert res["status"] == "success", res.get("error")
    with torch.device("meta"):
        meta = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(d))
    configs = {
        "lora": lambda: peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules="all-linear"),
        "ia3": lambda: peft.IA3Config(task_type="CAUSAL_LM"),
        "prompt": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
        "prefix": lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
    }
    trainable, _ = peft.get_peft_model(meta, configs[method]()).get_nb_trainable_parameters()
    assert res["metrics"]["trainable_params"] == trainable


def test_the_shapes_suite_expands_offline_with_parameter_counts():
    one_per_model = ["--only", "*lora-alpha32-r16--bf16--ga1", "--only", "*roberta*lora*", "--only", "*70b*"]
    args = ("--dry-run", "--no-estimate", *one_per_model)  # the cells and parameter counts, not their estimates
    res = cli("run", str(ROOT / "suites" / "shapes.yaml"), *args, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    for name, params in SHAPES.items():
        assert f"suites/shapes/{name}.json" in res.stdout and f"{params:,} parameters" in res.stdout, name
    assert "llama-3.1-70b--random-lm--qlora-alpha32-r16--nf4--ga1--gc" in res.stdout


def test_dry_run_says_why_a_size_is_unknown(tmp_path):
    import yaml

    suite = {
        "name": "hub",
        "defaults": {"task": "random-lm", "precision": "fp32", "grad_accum": 1, "method": "lora"},
        "matrix": {"model": [{"name": "org/not-cached-anywhere", "weights": "random"}]},
    }
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(suite))
    res = cli("run", str(path), "--dry-run", env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    assert "org/not-cached-anywhere (causal_lm): unknown (" in res.stdout
