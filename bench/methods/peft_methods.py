"""Reparameterisation methods from `peft`: the LoRA family, LoHa/LoKr, VeRA, OFT/BOFT, IA3, and the
quantized-base LoRA recipes (QLoRA, LLM.int8 + LoRA)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.methods.base import Method, MethodConfig, MethodContext


def _task_type(ctx: MethodContext) -> str:
    return "CAUSAL_LM" if ctx.model_kind == "causal_lm" else "SEQ_CLS"


class PeftMethod(Method):
    """Base for methods built from a peft config; checkpoints are peft adapter folders."""

    requires = ("peft",)

    @abc.abstractmethod
    def peft_config(self) -> Any:
        """The peft config of this method with this cell's options."""

    def apply(self, model: Any) -> Any:
        import peft

        if self.ctx.quantized:  # checkpointing is the grad_ckpt axis, enabled by the harness after apply
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return peft.get_peft_model(model, self.peft_config())

    def save(self, model: Any, out_dir: Path) -> dict[str, Any]:
        model.save_pretrained(out_dir)
        return {"saved": "adapter weights (peft save_pretrained)"}

    def load(self, base_model: Any, ckpt_dir: Path) -> Any:
        import peft

        return peft.PeftModel.from_pretrained(base_model, ckpt_dir)


@dataclass
class LoraOptions(MethodConfig):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")


class LoRA(PeftMethod):
    """Low-rank adapters on the targeted linear layers (default all-linear)."""

    name = "lora"
    config_cls = LoraOptions
    extra: dict[str, Any] = {}

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx
        return peft.LoraConfig(
            task_type=_task_type(ctx),
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=config.target_modules,
            **self.extra,
        )


class DoRA(LoRA):
    """Weight-decomposed LoRA: magnitude vector plus low-rank direction update."""

    name = "dora"
    extra = {"use_dora": True}


class RsLoRA(LoRA):
    """Rank-stabilised LoRA: scaling alpha/sqrt(r) instead of alpha/r."""

    name = "rslora"
    extra = {"use_rslora": True}


class QLoRA(LoRA):
    """LoRA on a 4-bit NF4 base (double quant, bf16 compute) after prepare_model_for_kbit_training."""

    name = "qlora"
    required_precisions = ("nf4",)


class LoRA8bit(LoRA):
    """LoRA on an LLM.int8 base (the Bloom-7B recipe)."""

    name = "lora8bit"
    required_precisions = ("int8",)


@dataclass
class AdaLoraOptions(MethodConfig):
    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    target_modules: str | list[str] = "all-linear"
    tinit_fraction: float = 0.1
    tfinal_fraction: float = 0.2
    orth_reg_weight: float = 0.5  # weight of the orthogonality regulariser on P and Q (peft's default)


def orthogonality_penalty(model: Any) -> Any:
    """AdaLoRA's regulariser: mean over lora_A / lora_B of ||P P^T - I||_F (A) or ||Q^T Q - I||_F (B)."""
    import torch

    terms = []
    for name, p in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and p.requires_grad and p.numel():
            cov = p @ p.T if "lora_A" in name else p.T @ p
            terms.append(torch.norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype), p="fro"))
    return torch.stack(terms).mean() if terms else torch.zeros(())


class AdaLoRA(PeftMethod):
    """Adaptive-rank LoRA with its orthogonality regulariser (added through the loss hook, once per step)."""

    name = "adalora"
    config_cls = AdaLoraOptions

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx
        tinit = int(ctx.steps * config.tinit_fraction)
        tfinal = int(ctx.steps * config.tfinal_fraction)
        return peft.AdaLoraConfig(
            task_type=_task_type(ctx),
            init_r=config.init_r,
            target_r=config.target_r,
            lora_alpha=config.alpha,
            target_modules=config.target_modules,
            total_step=ctx.steps,
            tinit=tinit,
            tfinal=min(tfinal, max(ctx.steps - tinit - 1, 0)),
            orth_reg_weight=0.0,  # peft would add it to every micro-batch's loss; `loss` adds it once per step
        )

    def loss(self, model: Any, task: Any, step: Any) -> Any:
        base = task.loss(model, step.batch, step.total_targets)
        if not self.config.orth_reg_weight:
            return base
        return base + self.config.orth_reg_weight * orthogonality_penalty(model) * (
            step.targets / max(step.total_targets, 1)
        )

    def after_optimizer_step(self, model: Any, step: int) -> None:
        model.base_model.update_and_allocate(step)


@dataclass
class LycorisOptions(MethodConfig):
    r: int = 8
    alpha: int = 8
    target_modules: str | list[str] = "all-linear"


class LoHa(PeftMethod):
    """Low-rank Hadamard product adapters (LyCORIS)."""

    name = "loha"
    config_cls = LycorisOptions

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx
        return peft.LoHaConfig(
            task_type=_task_type(ctx), r=config.r, alpha=config.alpha, target_modules=config.target_modules
        )


class LoKr(PeftMethod):
    """Low-rank Kronecker product adapters (LyCORIS)."""

    name = "lokr"
    config_cls = LycorisOptions

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx
        return peft.LoKrConfig(
            task_type=_task_type(ctx), r=config.r, alpha=config.alpha, target_modules=config.target_modules
        )


@dataclass
class VeraOptions(MethodConfig):
    r: int = 64
    target_modules: str | list[str] | None = None
    d_initial: float = 0.1


class VeRA(PeftMethod):
    """Shared frozen random projections with trained scaling vectors."""

    name = "vera"
    config_cls = VeraOptions

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx
        return peft.VeraConfig(
            task_type=_task_type(ctx), r=config.r, d_initial=config.d_initial, target_modules=config.target_modules
        )


@dataclass
class OftOptions(MethodConfig):
    block_size: int = 16
    target_modules: str | list[str] = "all-linear"


class OFT(PeftMethod):
    """Orthogonal fine-tuning: block-diagonal orthogonal rotation of weights."""

    name = "oft"
    config_cls = OftOptions

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx
        return peft.OFTConfig(
            task_type=_task_type(ctx), r=0, oft_block_size=config.block_size, target_modules=config.target_modules
        )


@dataclass
class BoftOptions(MethodConfig):
    block_size: int = 8
    n_butterfly_factor: int = 1
    target_modules: str | list[str] = "all-linear"


class BOFT(PeftMethod):
    """Butterfly orthogonal fine-tuning."""

    name = "boft"
    config_cls = BoftOptions

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx
        return peft.BOFTConfig(
            task_type=_task_type(ctx),
            boft_block_size=config.block_size,
            boft_n_butterfly_factor=config.n_butterfly_factor,
            target_modules=config.target_modules,
        )


@dataclass
class IA3Options(MethodConfig):
    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None


class IA3(PeftMethod):
    """Learned scaling of keys, values and feed-forward activations; peft's per-architecture defaults."""

    name = "ia3"
    config_cls = IA3Options

    def peft_config(self) -> Any:
        import peft

        config, ctx = self.config, self.ctx

        return peft.IA3Config(
            task_type=_task_type(ctx),
            target_modules=config.target_modules,
            feedforward_modules=config.feedforward_modules,
        )
