"""Linear probing as a peft-bench method plugin: the whole base is frozen, only the output head trains."""

from dataclasses import dataclass

from bench.methods.base import Method, MethodConfig


@dataclass
class HeadOnlyOptions(MethodConfig):
    include_bias: bool = True


class HeadOnly(Method):
    """Linear probing: only the classification head (or LM head) trains."""

    name = "head-only"
    config_cls = HeadOnlyOptions
    quantized_base_ok = True

    def apply(self, model):
        config: HeadOnlyOptions = self.config
        for p in model.parameters():
            p.requires_grad = False
        head = model.get_output_embeddings() if self.ctx.model_kind == "causal_lm" else None
        if head is None:
            head = next(model.get_submodule(n) for n in ("classifier", "score") if hasattr(model, n))
        for name, p in head.named_parameters():
            p.requires_grad = config.include_bias or not name.endswith("bias")
        return model
