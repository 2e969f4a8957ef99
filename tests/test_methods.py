"""The method catalogue: exactly the intended parameters train, counts match independent formulas,
checkpoints hold only the method's weights and reload to the same logits; third-party plugins."""

import inspect
import os
import tomllib
from pathlib import Path

import pytest
import torch
from transformers.models.bert.modeling_bert import BertModel

from bench.errors import RegistryError, Unsupported
from methods_helper import build, fresh_base, logits, train_steps

ALL = [
    "full",
    "lora",
    "dora",
    "rslora",
    "adalora",
    "loha",
    "lokr",
    "vera",
    "oft",
    "boft",
    "ia3",
    "prompt",
    "prefix",
    "ptuning",
    "adapter",
    "bitfit",
    "freeze",
    "distill",
    "prune",
    "lowrank",
]
UNSUPPORTED = {("tiny-llama", "bitfit"): "no bias terms"}
if "past_key_values" not in inspect.signature(BertModel.forward).parameters:  # transformers >= 5.2x dropped it
    UNSUPPORTED[("tiny-bert", "prefix")] = "past key values"
OPTIONS = {
    "prompt": {"num_virtual_tokens": 10},
    "prefix": {"num_virtual_tokens": 10},
    "ptuning": {"num_virtual_tokens": 10},
}
ROOT = Path(__file__).resolve().parents[1]

# tiny configs: hidden 64, 2 layers, MLP 128; llama: 4 heads of 16, 2 KV heads -> k/v out 32; 2 labels
H, L, FF, KV = 64, 2, 128, 32


def expected_trainable(model: str, method: str) -> int | None:
    head = H * 2 if model == "tiny-llama" else H * 2 + 2  # llama score has no bias; bert classifier has
    head = head if model == "tiny-bert" else 0  # causal LM (tiny-llama) tasks have no classification head
    if method == "lora":  # r=8 on every linear but the head
        per_layer = (
            (H + H) + (H + KV) + (H + KV) + (H + H) + (H + FF) + (H + FF) + (FF + H)
            if model == "tiny-llama"
            else 4 * (H + H) + (H + FF) + (FF + H)
        )
        pooler = 0 if model == "tiny-llama" else H + H
        return 8 * (L * per_layer + pooler) + head
    if method == "ia3":  # scaling vectors: k, v outputs and the MLP down-projection input; on BERT peft's
        #                 "output.dense" also matches attention.output.dense (scaled on its 64 inputs)
        return L * (KV + KV + FF) if model == "tiny-llama" else L * (H + H + H + FF) + head
    if method == "prompt":
        return 10 * H + head
    if method == "prefix":  # keys and values for every layer and virtual token (grouped-query KV width on llama)
        return 10 * L * 2 * (KV if model == "tiny-llama" else H) + head
    if method == "adapter":  # reduction 16: bottleneck 4, after attention-out and MLP-out of each layer
        return L * 2 * (H * 4 + 4 + 4 * H + H) + head
    if method == "bitfit":  # bert biases: q,k,v,o(64) + 2 LN(64 each) + ff in(128) + ff out(64) per layer,
        #                       embeddings LN (64), pooler (64), head
        return L * (4 * H + 2 * H + FF + H) + H + H + head
    return None


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert"])
@pytest.mark.parametrize("method", ALL)
def test_only_intended_parameters_change(model, method, tmp_path):
    options = {"teacher": model, "student_layers": 1} if method == "distill" else OPTIONS.get(method)
    if (model, method) in UNSUPPORTED:
        with pytest.raises(Unsupported, match=UNSUPPORTED[(model, method)]):
            build(model, method, options)
        return
    a = build(model, method, options)
    before = {n: p.detach().clone() for n, p in a.model.named_parameters()}
    trainable = {n for n, p in a.model.named_parameters() if p.requires_grad}
    train_steps(a)
    changed = {n for n, p in a.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    if method in ("adalora", "prune"):  # rank pruning / pruned weights keep some entries at zero
        assert changed
    else:
        assert changed == trainable, f"trainable but unchanged: {sorted(trainable - changed)[:5]}"
    n_trainable = sum(p.numel() for p in a.model.parameters() if p.requires_grad)
    want = expected_trainable(model, method)
    if want is not None:
        assert n_trainable == want
    if method == "freeze":  # default: the last block (+ head)
        assert all(".1." in n or "classifier" in n for n in trainable)

    # the checkpoint reloads into a fresh base and reproduces the trained model's logits
    ckpt = tmp_path / "ckpt"
    a.method.save(a.model, ckpt)
    expected = logits(a.model, a.task)
    reloaded = a.method.load(fresh_base(model), ckpt)
    torch.testing.assert_close(logits(reloaded, a.task), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt", "adapter", "bitfit", "freeze"])
def test_checkpoint_holds_only_the_method_weights(method, tmp_path):
    from safetensors import safe_open

    a = build("tiny-bert", method, OPTIONS.get(method))
    a.method.save(a.model, tmp_path)
    stored = 0
    for f in tmp_path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            stored += sum(fh.get_tensor(k).numel() for k in fh.keys())
    assert stored == sum(p.numel() for p in a.model.parameters() if p.requires_grad)


def test_freeze_modes():
    a = build("tiny-bert", "freeze", {"mode": "layernorm"})
    names = {n for n, p in a.model.named_parameters() if p.requires_grad}
    assert names and all("LayerNorm" in n or "classifier" in n for n in names)
    a = build("tiny-llama", "freeze", {"mode": "patterns", "patterns": [r"embed_tokens"]})
    assert {n for n, p in a.model.named_parameters() if p.requires_grad} == {"model.embed_tokens.weight"}


def test_method_options_are_validated_with_choices():
    from bench.methods.prompt_methods import PTuningOptions
    from bench.options import parse_options

    _, problems = parse_options(PTuningOptions, {"encoder": "gru", "num_virtual_tokenz": 3}, "method")
    assert any("'gru' is not one of 'mlp', 'lstm'" in p for p in problems)
    assert any("did you mean 'num_virtual_tokens'" in p for p in problems)


def _dist_on_path(site: Path, name: str, version: str, eps: dict[str, str]) -> None:
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in eps.items())
    (dist / "entry_points.txt").write_text(f"[peft_bench.methods]\n{lines}\n")


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    """The example package made importable with its declared entry points, as `pip install` would."""
    from bench import registry

    example = ROOT / "examples" / "plugin-example"
    meta = tomllib.loads((example / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    _dist_on_path(site, meta["name"], meta["version"], meta["entry-points"]["peft_bench.methods"])
    paths = [str(site), str(example)]
    for p in paths:
        monkeypatch.syspath_prepend(p)
    registry.clear()
    yield {"PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])}
    registry.clear()


@pytest.mark.slow
def test_third_party_plugin_is_listed_and_runs_in_a_suite(example_plugin, tmp_path):
    from conftest import cli, make_suite, read_jsonl

    res = cli("list", "methods", env=example_plugin)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("head-only"))
    assert "peft-bench-example-plugin 0.1.0" in line
    assert any(ln.startswith("lora") and "peft-bench" in ln for ln in res.stdout.splitlines())
    path = make_suite(tmp_path, {"method": ["head-only"], "model": ["tiny-bert"]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=example_plugin)
    assert res.returncode == 0, res.stderr
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert rec["status"] == "success" and rec["metrics"]["trainable_params"] == H * 2 + 2


def test_two_plugins_with_one_name_is_a_clear_error(tmp_path, monkeypatch):
    from bench import registry

    _dist_on_path(tmp_path, "rogue-plugin", "1.0", {"lora": "rogue.module:NotLoRA"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear()
    try:
        with pytest.raises(RegistryError, match="two plugins register method 'lora'.*rogue-plugin 1.0"):
            registry.discover("method")
    finally:
        registry.clear()
