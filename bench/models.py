"""Model sources: named configs with random weights (CI), the offline MiniLM cache, local paths, hub ids."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import assets
from bench.options import suggest

KINDS = ("causal_lm", "seq_cls")

# Named configs: built with random weights from a seeded generator; dropout off so runs are exact.
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-llama": dict(
        model_type="llama",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    ),
    "tiny-bert": dict(
        model_type="bert",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    ),
    # Llama-3.2-1B shape for GPU suites without hub access: memory and speed real, scores not meaningful.
    "llama-1b-shape": dict(
        model_type="llama",
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    ),
}
CONFIG_KINDS = {"tiny-llama": KINDS, "tiny-bert": ("seq_cls",), "llama-1b-shape": KINDS}
CACHED = {"minilm-l6": assets.minilm_dir}
NAMED = sorted([*CONFIGS, *CACHED])
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
)


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "config" | "dir" | "hub"
    ref: str  # config name, directory, or hub id
    random_weights: bool


def resolve_source(name: str) -> ModelSource:
    """Map a suite's model entry to where its weights come from; ValueError with choices if unknown."""
    if name in CONFIGS:
        return ModelSource("config", name, True)
    if name in CACHED:
        path = CACHED[name]()
        if not (path / "config.json").exists():
            raise ValueError(assets.missing_message(path))
        return ModelSource("dir", str(path), False)
    if Path(name).expanduser().is_dir():
        return ModelSource("dir", str(Path(name).expanduser().resolve()), False)
    if "/" in name and not name.startswith((".", "/", "~")):
        return ModelSource("hub", name, False)
    raise ValueError(
        f"unknown model {name!r}{suggest(name, NAMED)}; use a named model ({', '.join(NAMED)}), "
        "an existing local directory, or a hub id like org/name"
    )


def supported_kinds(name: str) -> tuple[str, ...]:
    return CONFIG_KINDS.get(name, KINDS)


def auto_class(kind: str):
    import transformers

    return transformers.AutoModelForCausalLM if kind == "causal_lm" else transformers.AutoModelForSequenceClassification


def load_model(
    name: str, kind: str, num_labels: int | None, seed: int, load_kwargs: dict[str, Any], options: dict[str, Any]
):
    """Build or load the model and its tokenizer (None for named configs). `load_kwargs` carry dtype/quantization."""
    import torch
    import transformers

    source = resolve_source(name)
    cls = auto_class(kind)
    label_kwargs = {"num_labels": num_labels} if kind == "seq_cls" else {}
    common = dict(trust_remote_code=bool(options.get("trust_remote_code", False)))
    if options.get("revision"):
        common["revision"] = options["revision"]
    if source.kind == "config":
        cfg = transformers.AutoConfig.for_model(**CONFIGS[name], **label_kwargs)
        torch.manual_seed(seed)
        model = cls.from_config(cfg)
        if not load_kwargs:
            return model, None
        # Quantized / reduced-precision bases go through the real from_pretrained path.
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            return cls.from_pretrained(tmp, **load_kwargs), None
    model = cls.from_pretrained(source.ref, **label_kwargs, **load_kwargs, **common)
    if source.kind == "dir" and not any((Path(source.ref) / f).exists() for f in TOKENIZER_FILES):
        return model, None  # weights only: transformers would otherwise invent an empty tokenizer
    tokenizer = transformers.AutoTokenizer.from_pretrained(source.ref, **common)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
