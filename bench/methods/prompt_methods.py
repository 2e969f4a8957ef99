"""Soft-prompt methods from `peft`: prompt tuning, prefix tuning, P-tuning."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

from bench.errors import Unsupported
from bench.methods.base import MethodConfig
from bench.methods.peft_methods import PeftMethod, _task_type


def _check_tokens(n: int) -> None:
    if not 1 <= n <= 512:
        raise ValueError(f"num_virtual_tokens must be in 1..512, got {n}")


@dataclass
class PromptOptions(MethodConfig):
    num_virtual_tokens: int = 20
    init: Literal["random", "text"] = "random"
    init_text: str = "Classify the sentiment of this text:"

    def __post_init__(self):
        _check_tokens(self.num_virtual_tokens)


class PromptTuning(PeftMethod):
    """Trained soft-prompt embeddings prepended to the input."""

    name = "prompt"
    config_cls = PromptOptions
    prepends_tokens = True

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx

        kwargs: dict[str, Any] = {}
        if config.init == "text":
            path = getattr(ctx.tokenizer, "name_or_path", None)
            if not path:
                raise Unsupported("prompt init 'text' needs a model with a tokenizer; this model has none")
            kwargs = dict(
                prompt_tuning_init="TEXT", prompt_tuning_init_text=config.init_text, tokenizer_name_or_path=path
            )
        return peft.PromptTuningConfig(
            task_type=_task_type(ctx), num_virtual_tokens=config.num_virtual_tokens, **kwargs
        )


@dataclass
class PrefixOptions(MethodConfig):
    num_virtual_tokens: int = 20
    projection: bool = False
    encoder_hidden_size: int = 128

    def __post_init__(self):
        _check_tokens(self.num_virtual_tokens)


class PrefixTuning(PeftMethod):
    """Trained key/value prefixes in every attention layer."""

    name = "prefix"
    config_cls = PrefixOptions

    def apply(self, model: Any) -> Any:
        # peft's sequence-classification wrapper feeds the prefix as past_key_values (same check as peft's forward)
        backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
        if self.ctx.model_kind == "seq_cls" and not any(
            m is not None and "past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone)
        ):
            raise Unsupported(f"prefix tuning injects past key values; {type(model).__name__} does not accept them")
        return super().apply(model)

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx

        return peft.PrefixTuningConfig(
            task_type=_task_type(ctx),
            num_virtual_tokens=config.num_virtual_tokens,
            prefix_projection=config.projection,
            encoder_hidden_size=config.encoder_hidden_size,
        )


@dataclass
class PTuningOptions(MethodConfig):
    num_virtual_tokens: int = 20
    encoder: Literal["mlp", "lstm"] = "mlp"
    encoder_hidden_size: int = 128

    def __post_init__(self):
        _check_tokens(self.num_virtual_tokens)


class PTuning(PeftMethod):
    """P-tuning: virtual tokens produced by a trained MLP or LSTM prompt encoder."""

    name = "ptuning"
    config_cls = PTuningOptions
    prepends_tokens = True

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx

        return peft.PromptEncoderConfig(
            task_type=_task_type(ctx),
            num_virtual_tokens=config.num_virtual_tokens,
            encoder_reparameterization_type=config.encoder.upper(),
            encoder_hidden_size=config.encoder_hidden_size,
        )
