"""What a model's configuration allows a cell to do with it: causal-LM tasks only on models with a causal mask,
sequences only as long as absolute position embeddings reach. Read from the config alone (no weights), so the
suite is checked before any cell runs and the cell checks again with the config it really loaded."""

from __future__ import annotations

from typing import Any

# absolute-position families that reserve the first positions (RoBERTa's padding_idx + 1 offset)
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2, "data2vec-text": 2}
ROTARY_ATTRS = ("rope_parameters", "rope_theta", "rope_scaling", "rotary_dim", "rotary_pct")


def causal_problem(config: Any) -> str | None:
    """Why this config cannot be a causal LM (None: it can). transformers keeps `is_decoder` only on configs of
    encoder families that can also decode; it is False unless the config asks for a causal mask."""
    if getattr(config, "is_decoder", None) is False and not getattr(config, "is_encoder_decoder", False):
        return (
            f"{getattr(config, 'model_type', type(config).__name__)} is a bidirectional encoder here (is_decoder is "
            "false: no causal mask, so every position sees the tokens after it) and causal-LM scores on it are "
            "invalid; use a decoder model, or set is_decoder: true in its config.json"
        )
    return None


def is_rotary(config: Any) -> bool:
    return any(getattr(config, a, None) is not None for a in ROTARY_ATTRS)


def position_limit(config: Any) -> int | None:
    """The longest sequence absolute position embeddings cover; None for rotary models or without a figure."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or is_rotary(config):
        return None
    return int(limit) - POSITION_OFFSET.get(getattr(config, "model_type", ""), 0)


def position_problem(config: Any, tokens: int, what: str) -> str | None:
    """Why `tokens` positions (seq_len + virtual tokens, described by `what`) do not fit (None: they do)."""
    limit = position_limit(config)
    if limit is not None and tokens > limit:
        kind = getattr(config, "model_type", "this model")
        return f"{what} needs {tokens} positions but {kind} has absolute position embeddings for {limit}; lower seq_len"
    return None


def position_note(config: Any, tokens: int, what: str) -> str | None:
    """A rotary model asked to run past the length it was configured for: allowed, worth saying."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and is_rotary(config) and tokens > limit:
        return (
            f"{what} ({tokens} positions) runs past max_position_embeddings {limit} (RoPE: allowed, quality may drop)"
        )
    return None
