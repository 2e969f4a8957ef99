"""Model sources and loading: named configs, `config.json` files, local directories, hub ids, each with real
weights or (`weights: random`) only its configuration and seeded random weights.

Random-weight models are built directly on the cell's device in the dtype the precision policy stores the base in,
with the constructors' own initialisation switched off and transformers' initialisation run once there (on a GPU
that takes milliseconds instead of half a minute of CPU work). Quantized random bases go through transformers'
bitsandbytes loader with a lazy state dict (`from_pretrained(None, state_dict=...)`): each weight is drawn on the
device and quantized before the next, so a 70B-class shape never exists in bf16; no temporary directory.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.models.configs import CONFIGS
from bench.models.sources import TOKENIZER_FILES, ModelSource, resolve_source, resolve_tokenizer


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)


def auto_class(kind: str) -> Any:
    import transformers

    return transformers.AutoModelForCausalLM if kind == "causal_lm" else transformers.AutoModelForSequenceClassification


PROBE_TIMEOUT_S = 3.0


@functools.cache
def hub_unreachable() -> str | None:
    """Why the model hub cannot be used from here (None: it answers). One short connect, once per process, instead
    of transformers' retries (76 s to fail a cell offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"cannot reach {host}:{port} within {PROBE_TIMEOUT_S:g} s ({exc.strerror or type(exc).__name__})"
    return None


def _hub_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"trust_remote_code": bool(options.get("trust_remote_code", False))}
    if options.get("revision"):
        out["revision"] = options["revision"]
    return out


def _hub_config(source: ModelSource, labels: dict[str, Any], options: dict[str, Any]) -> Any:
    import transformers

    why = hub_unreachable() if source.kind == "hub" else None
    kwargs = {**labels, **_hub_kwargs(options), **({"local_files_only": True} if why else {})}
    try:
        return transformers.AutoConfig.from_pretrained(source.ref, **kwargs)
    except OSError as exc:
        if not why:
            raise
        raise ValueError(
            f"model {source.ref!r}: the hub is unreachable ({why}) and the model is not in the local cache; give a "
            "local directory or a config .json (weights: random), or run where the hub answers"
        ) from exc


def load_config(source: ModelSource, kind: str, num_labels: int | None, options: dict[str, Any]) -> tuple[Any, dict]:
    """(transformers config, where it came from) without touching any weights. A random-weight model with a
    borrowed tokenizer gets the tokenizer's vocabulary size (when larger) and special-token ids."""
    cfg, info = _read_config(source, kind, num_labels, options)
    if source.random_weights and options.get("tokenizer"):
        info.update(fit_vocab(cfg, borrowed_tokenizer(options["tokenizer"])))
    return cfg, info


def _read_config(source: ModelSource, kind: str, num_labels: int | None, options: dict[str, Any]) -> tuple[Any, dict]:
    import transformers

    labels = {"num_labels": num_labels} if kind == "seq_cls" else {}
    if source.kind == "config":
        return transformers.AutoConfig.for_model(**CONFIGS[source.ref], **labels), {"config_source": "named"}
    if source.kind == "config_file":
        text = Path(source.ref).read_text()
        cfg = transformers.AutoConfig.from_pretrained(source.ref, **labels)
        return cfg, {"config_source": source.ref, "config_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    cfg = _hub_config(source, labels, options)
    info: dict[str, Any] = {"config_source": source.ref}
    if source.kind == "dir":
        info["config_sha256"] = hashlib.sha256((Path(source.ref) / "config.json").read_bytes()).hexdigest()[:16]
    else:
        info["config_revision"] = getattr(cfg, "_commit_hash", None) or options.get("revision")
    return cfg, info


def build_random(cls: Any, cfg: Any, device: str, dtype: str, seed: int, **kwargs: Any) -> Any:
    """Seeded random weights built on `device` in `dtype`, initialised once (constructor inits switched off)."""
    import torch
    from transformers.initialization import no_init_weights

    with torch.device(device), no_init_weights():
        model = cls.from_config(cfg, dtype=getattr(torch, dtype), **kwargs)
    torch.manual_seed(seed)
    if device != "meta":
        model.init_weights()
    else:
        model.tie_weights()
    return model


class RandomTensor:
    """A parameter's seeded random values, made only when transformers' loader reads it (`tensor[...]`), on the
    target device: a quantized base is built layer by layer, never whole in bf16."""

    def __init__(self, shape: tuple[int, ...], kind: str, std: float, seed: int, device: str):
        import torch

        self.shape, self.kind, self.std, self.seed, self.device = tuple(shape), kind, std, seed, device
        self.dtype = torch.bfloat16

    def __getitem__(self, key: Any) -> Any:
        import torch

        if self.kind != "normal":
            fill = torch.ones if self.kind == "ones" else torch.zeros
            return fill(self.shape, dtype=self.dtype, device=self.device)[key]
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        return out.normal_(0.0, self.std, generator=gen)[key]


def random_quantized(cls: Any, cfg: Any, quant: Any, device: str, seed: int, **kwargs: Any) -> Any:
    """A bitsandbytes-quantized base with seeded random weights, through transformers' real quantizing loader,
    in memory and one parameter at a time (norm weights 1, biases 0, the rest N(0, initializer_range))."""
    import zlib

    import torch

    meta = build_random(cls, cfg, "meta", "bfloat16", seed)
    modules = dict(meta.named_modules())
    std = getattr(cfg, "initializer_range", 0.02) or 0.02
    state, seen = {}, set()
    for key, tensor in meta.state_dict(keep_vars=True).items():
        if id(tensor) in seen:  # tied weights (embeddings / lm_head) are one parameter
            continue
        seen.add(id(tensor))
        module = modules[key.rpartition(".")[0]]
        kind = (
            "ones"
            if "Norm" in type(module).__name__ and key.endswith("weight")
            else "zeros"
            if key.endswith("bias")
            else "normal"
        )
        state[key] = RandomTensor(
            tensor.shape, kind, std, seed ^ zlib.crc32(key.encode()), "cuda" if device == "cuda" else "cpu"
        )
    target = {"": 0} if device == "cuda" else {"": "cpu"}
    return type(meta).from_pretrained(
        None, config=cfg, state_dict=state, quantization_config=quant, dtype=torch.bfloat16, device_map=target, **kwargs
    )


def load_model(
    name: str,
    kind: str,
    num_labels: int | None,
    seed: int,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    quant: Any = None,
    options: dict[str, Any] | None = None,
    attn: str = "",
) -> LoadedModel:
    """Build or load the model (on `device`, base stored as `dtype`, quantized by `quant`, attention `attn` or the
    model's default) and its tokenizer. An attention the model or machine lacks is Unsupported, saying why."""
    from bench.errors import Unsupported

    options = options or {}
    try:
        loaded = _load_model(name, kind, num_labels, seed, device, dtype, quant, options, attn)
    except (ImportError, ValueError) as exc:
        if not attn or "attn" not in str(exc).lower() and "attention" not in str(exc).lower():
            raise
        raise Unsupported(f"attention {attn!r} is not available for {name!r} here: {str(exc)[:300]}") from exc
    return loaded


def _load_model(name, kind, num_labels, seed, device, dtype, quant, options, attn) -> LoadedModel:
    extra = {"attn_implementation": attn} if attn else {}
    source = resolve_source(name, options)
    cls = auto_class(kind)
    info: dict[str, Any] = {"source": source.kind, "random_weights": source.random_weights}
    if source.kind == "hub" and hub_unreachable():
        _hub_config(source, {}, options)  # from the local cache, or one clear error now
    if source.random_weights:
        cfg, where = load_config(source, kind, num_labels, options)
        if quant is None:
            model = build_random(cls, cfg, device, dtype, seed, **extra)
        else:
            model = random_quantized(cls, cfg, quant, device, seed, **extra)
        info.update(where)
    else:
        model = _from_pretrained(cls, source, kind, num_labels, device, dtype, quant, {**options, **extra})
    tokenizer, info["tokenizer"] = model_tokenizer(source, options)
    if tokenizer is not None:
        _check_vocab(model, tokenizer, info["tokenizer"])
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    info.update({"class": type(model).__name__, "has_tokenizer": tokenizer is not None})
    if attn:
        info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    return LoadedModel(model, tokenizer, info)


def model_tokenizer(source: ModelSource, options: dict[str, Any]) -> tuple[Any, str | None]:
    """(the cell's tokenizer or None, where it came from): the entry's `tokenizer:` when given, else the model's."""
    if ref := options.get("tokenizer"):
        path = resolve_tokenizer(ref).ref
        return borrowed_tokenizer(ref), ref if path == ref else f"{ref} ({path})"
    tokenizer = _tokenizer(source, options)
    return tokenizer, source.ref if tokenizer is not None else None


@functools.cache
def borrowed_tokenizer(ref: str) -> Any:
    """A tokenizer named by a model entry's `tokenizer:` option (loaded once per process)."""
    return _tokenizer(resolve_tokenizer(ref), {})


def fit_vocab(cfg: Any, tokenizer: Any) -> dict[str, Any]:
    """Make a random-weight config fit a borrowed tokenizer: vocabulary at least the tokenizer's, and its pad, BOS
    and EOS ids (EOS: the separator where the tokenizer has no EOS, as BERT's). Returns what changed."""
    changed: dict[str, Any] = {}
    if len(tokenizer) > cfg.vocab_size:
        changed["vocab_size_from_tokenizer"] = [cfg.vocab_size, len(tokenizer)]
        cfg.vocab_size = len(tokenizer)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    for key, value in (("pad_token_id", tokenizer.pad_token_id), ("bos_token_id", bos), ("eos_token_id", eos)):
        if hasattr(cfg, key) or value is not None:
            setattr(cfg, key, value)
    return changed


def _check_vocab(model: Any, tokenizer: Any, where: str | None) -> None:
    from bench.errors import Unsupported

    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise Unsupported(
            f"tokenizer {where} has {len(tokenizer)} tokens but the model's embedding has {rows} rows: ids past "
            f"{rows - 1} have no embedding; use the model's own tokenizer or weights: random"
        )


def _from_pretrained(cls, source, kind, num_labels, device, dtype, quant, options) -> Any:
    import torch

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), **_hub_kwargs(options)}
    if options.get("attn_implementation"):
        kwargs["attn_implementation"] = options["attn_implementation"]
    if source.kind == "hub" and hub_unreachable():
        kwargs["local_files_only"] = True  # the config came from the cache: so must the weights
    if kind == "seq_cls":
        kwargs["num_labels"] = num_labels
    if quant is not None:
        kwargs.update(
            quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0 if device == "cuda" else "cpu"}
        )
    elif device != "cpu":
        kwargs["device_map"] = {"": device}
    return cls.from_pretrained(source.ref, **kwargs)


def _tokenizer(source: ModelSource, options: dict[str, Any]) -> Any:
    """The model's tokenizer where it has one (None for named configs, config files and bare weight folders)."""
    if source.kind in ("config", "config_file"):
        return None
    if source.kind == "dir" and not any((Path(source.ref) / f).exists() for f in TOKENIZER_FILES):
        return None  # weights only: transformers would otherwise invent an empty tokenizer
    import transformers

    offline = {"local_files_only": True} if source.kind == "hub" and hub_unreachable() else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(source.ref, **_hub_kwargs(options), **offline)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def parameter_count(name: str, kind: str, num_labels: int | None, options: dict[str, Any]) -> tuple[int | None, str]:
    """(parameters, '') from the config alone, built on the meta device; (None, why) when the config is out of
    reach (e.g. a hub id offline)."""
    try:
        source = resolve_source(name, options)
        cfg, _ = load_config(source, kind, num_labels, options)
        model = build_random(auto_class(kind), cfg, "meta", "bfloat16", 0)
    except Exception as exc:  # offline hub, unknown architecture, ...
        return None, f"{type(exc).__name__}: {str(exc)[:160]}"
    return sum(p.numel() for p in model.parameters()), ""
