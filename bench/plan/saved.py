"""Activations counted, not guessed: one forward of the model as the method leaves it, over fake tensors.

torch's FakeTensorMode runs the forward with shapes, dtypes and the CPU kernels' choices (which attention kernel,
what autocast casts) but no data and no memory; `torch.autograd.graph.saved_tensors_hooks` sees every tensor autograd
keeps for backward, and each distinct storage that is not a parameter or buffer is counted once. So a frozen base
that keeps no linear inputs (IA3, prompt tuning), the virtual tokens of prompt tuning, fp32 norm copies under
autocast and autocast's half copies of fp32 weights are all in the figure as torch does them.

The count runs on CPU fake tensors whatever the cell's device (a fake CUDA tensor would start a CUDA context in the
runner, or abort a CPU-only build): CUDA kernels save the same tensors for the layers of these models; autocast's
CPU op lists stand in for CUDA's. With gradient checkpointing a block keeps only its input and one block's saved
tensors come back during its recomputation; the count is taken without it and the blocks' shares replaced so.
The loss's backward holds the logits' gradient (fp32 and the compute dtype) on top: `transient`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SavedCount:
    outside: int = 0  # bytes saved outside the transformer blocks (embeddings, final norm, head, loss)
    blocks: list[int] = field(default_factory=list)  # bytes saved inside each block
    block_inputs: list[int] = field(default_factory=list)  # bytes of each block's input
    logits: int = 0  # elements of the logits the loss sees

    def saved(self, grad_ckpt: bool) -> int:
        if not grad_ckpt or not self.blocks:
            return self.outside + sum(self.blocks)
        return self.outside + sum(self.block_inputs) + max(self.blocks)


def count_saved(model: Any, micro_batch: int, seq_len: int, half: Any, causal: bool) -> SavedCount:
    """What one training forward of `model` saves for backward at this micro-batch (module docstring); `half` is
    the autocast dtype or None. Raises where the model cannot run on fake tensors (the caller falls back)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.multiprocessing.reductions import StorageWeakRef

    from bench.models.precision import input_casting_off

    mode = FakeTensorMode(allow_non_fake_inputs=True)  # a method's plain tensors (peft's prompt token ids)
    count, current, seen = SavedCount(), [], set()
    autocast = torch.autocast("cpu", dtype=half) if half is not None else nullcontext()
    with _faked(model, mode) as fakes, _block_hooks(model, count, current):
        own = {StorageWeakRef(t.untyped_storage()) for t in fakes}  # the weights' storages: not activations

        def pack(t: Any) -> Any:
            ref = StorageWeakRef(t.untyped_storage())
            if ref not in own and ref not in seen:
                seen.add(ref)
                if current:
                    count.blocks[current[-1]] += t.untyped_storage().nbytes()
                else:
                    count.outside += t.untyped_storage().nbytes()
            return t

        with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
            ids = torch.zeros((micro_batch, seq_len), dtype=torch.long)
            labels = ids if causal else torch.zeros((micro_batch,), dtype=torch.long)
            with input_casting_off(model, half is not None):
                count.logits = model(input_ids=ids, labels=labels).logits.numel()
    return count


@contextmanager
def _faked(model: Any, mode: Any) -> Any:
    """Every parameter and buffer of the model replaced by a CPU fake tensor of its shape and dtype (a tensor two
    modules share stays one tensor), put back afterwards whatever happens; yields the fakes."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    fakes: dict[int, Any] = {}
    undo = []
    try:
        for module in model.modules():
            for store in (module._parameters, module._buffers):
                for key, t in list(store.items()):
                    if t is None:
                        continue
                    if id(t) not in fakes:
                        fake = FakeTensor(mode, t.detach().to("meta"), torch.device("cpu"))
                        fakes[id(t)] = fake.requires_grad_(True) if t.requires_grad else fake
                    undo.append((store, key, t))
                    store[key] = fakes[id(t)]
        yield list(fakes.values())
    finally:
        for store, key, t in reversed(undo):
            store[key] = t


@contextmanager
def _block_hooks(model: Any, count: SavedCount, current: list[int]) -> Any:
    """While inside block i, `current` ends with i; each block's input bytes recorded (none without blocks)."""
    from bench.models.blocks import transformer_blocks

    try:
        blocks = transformer_blocks(model)
    except Exception:
        blocks = []
    handles = []
    for i, block in enumerate(blocks):
        count.blocks.append(0)
        count.block_inputs.append(0)
        handles.append(block.register_forward_pre_hook(_enter(i, current, count), with_kwargs=True))
        handles.append(block.register_forward_hook(_leave(current)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _enter(index: int, current: list[int], count: SavedCount) -> Any:
    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if hidden is not None and count.block_inputs[index] == 0:
            count.block_inputs[index] = hidden.untyped_storage().nbytes()
        current.append(index)

    return hook


def _leave(current: list[int]) -> Any:
    def hook(*args: Any) -> None:  # a forward hook's return value would replace the block's output
        current.pop()

    return hook
