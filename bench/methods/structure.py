"""Where a transformer's prunable and factorizable parts are, and structured surgery on them: the linear layers
inside the blocks, MLP channel removal and attention head removal (Llama-like and BERT-like layouts)."""

from __future__ import annotations

from typing import Any

from bench.errors import Unsupported

# (input side, output side) of an MLP, by architecture: the inputs' rows and the output's columns are channels
MLP_PAIRS = (
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
    (("intermediate.dense",), "output.dense"),
    (("mlp.fc1",), "mlp.fc2"),
    (("fc1",), "fc2"),
)
# (query, key, value, output projection) relative to a block
ATTENTION = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
)


def block_linears(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every linear layer inside the transformer blocks (not embeddings, heads or poolers)."""
    import torch

    from bench.models.blocks import transformer_layers

    prefix, _ = transformer_layers(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefix + ".")]


def _blocks(model: Any) -> list[Any]:
    from bench.models.blocks import transformer_layers

    return list(transformer_layers(model)[1])


def _get(block: Any, path: str) -> Any:
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def _shrink(linear: Any, keep: Any, dim: int) -> Any:
    """A copy of `linear` keeping the given output rows (dim 0) or input columns (dim 1)."""
    import torch

    w = linear.weight.detach().index_select(dim, keep)
    bias = linear.bias is not None
    out = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if bias:
            out.bias.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, keep))
    return out


def _set(block: Any, path: str, module: Any) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, attr, module)


def prune_mlp_channels(model: Any, sparsity: float) -> tuple[int, int]:
    """Remove the fraction `sparsity` of each block's MLP channels with the smallest |w_in| x |w_out|; returns
    the MLP weights' (before, after) element counts."""
    import torch

    kept, before, after = None, 0, 0
    for block in _blocks(model):
        pair = next(
            ((ins, out) for ins, out in MLP_PAIRS if all(_get(block, p) is not None for p in (*ins, out))), None
        )
        if pair is None:
            raise Unsupported(f"no known MLP layout in {type(block).__name__} for channel pruning")
        ins, out = pair
        before += sum(_get(block, p).weight.numel() for p in (*ins, out))
        w_out = _get(block, out).weight.detach().float()
        score = w_out.norm(dim=0)
        for p in ins:
            score = score * _get(block, p).weight.detach().float().norm(dim=1)
        kept = max(1, round(score.numel() * (1 - sparsity)))
        keep = torch.topk(score, kept).indices.sort().values
        for p in ins:
            _set(block, p, _shrink(_get(block, p), keep, 0))
        _set(block, out, _shrink(_get(block, out), keep, 1))
        after += sum(_get(block, p).weight.numel() for p in (*ins, out))
    model.config.intermediate_size = kept
    return before, after


def prune_heads(model: Any, sparsity: float) -> tuple[int, int]:
    """Remove the fraction `sparsity` of each block's attention heads (whole key/value groups under grouped-query
    attention), scored by the norm of their output-projection columns; returns the attention weights' (before,
    after) element counts."""
    import torch

    before = after = 0
    cfg = model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    groups_kept = max(1, round(kv * (1 - sparsity)))
    if groups_kept == kv:
        raise Unsupported(f"sparsity {sparsity} removes no head: {kv} key/value heads")
    for block in _blocks(model):
        names = next((a for a in ATTENTION if all(_get(block, p) is not None for p in a)), None)
        if names is None:
            raise Unsupported(f"no known attention layout in {type(block).__name__} for head pruning")
        q, k, v, o = (_get(block, p) for p in names)
        before += sum(m.weight.numel() for m in (q, k, v, o))
        per_group = heads // kv
        score = o.weight.detach().float().norm(dim=0).view(kv, per_group * head_dim).norm(dim=1)
        groups = torch.topk(score, groups_kept).indices.sort().values
        kv_rows = (groups[:, None] * head_dim + torch.arange(head_dim, device=groups.device)).flatten()
        q_heads = (groups[:, None] * per_group + torch.arange(per_group, device=groups.device)).flatten()
        q_rows = (q_heads[:, None] * head_dim + torch.arange(head_dim, device=groups.device)).flatten()
        _set(block, names[0], _shrink(q, q_rows, 0))
        _set(block, names[1], _shrink(k, kv_rows if kv != heads else q_rows, 0))
        _set(block, names[2], _shrink(v, kv_rows if kv != heads else q_rows, 0))
        _set(block, names[3], _shrink(o, q_rows, 1))
        _relabel_attention(block, names[0], len(q_heads), head_dim)
        after += sum(_get(block, p).weight.numel() for p in names)
    cfg.num_attention_heads = groups_kept * (heads // kv)
    cfg.head_dim = head_dim
    if hasattr(cfg, "num_key_value_heads"):
        cfg.num_key_value_heads = groups_kept
    return before, after


def _relabel_attention(block: Any, q_path: str, n_heads: int, head_dim: int) -> None:
    """Attention modules that keep their head count as attributes (BERT-like) get the new one."""
    attn = block.get_submodule(q_path.rpartition(".")[0])
    if hasattr(attn, "num_attention_heads"):
        attn.num_attention_heads = n_heads
    if hasattr(attn, "all_head_size"):
        attn.all_head_size = n_heads * head_dim
