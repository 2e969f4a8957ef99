"""Training defaults: the one place they are defined. RunSpec, suite validation, `peft-bench list defaults`,
`peft-bench run --help` and the README table all read this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Default:
    key: str
    type: Any  # int | float | bool | str | tuple of those (the value may be any of them)
    value: Any
    help: str
    entry_override: bool = False  # a model/task/method entry may set it for its own cells
    minimum: float | None = None  # numbers: smallest allowed value (inclusive)
    choices: tuple[Any, ...] = ()


@dataclass
class InferenceOptions:
    new_tokens: int = 64
    batch: int = 1
    prompt_len: int = 32
    repeats: int = 3

    def __post_init__(self):
        if min(self.new_tokens, self.batch, self.prompt_len, self.repeats) < 1:
            raise ValueError("new_tokens, batch, prompt_len and repeats must be >= 1")


@dataclass
class CompileOptions:
    """`compile: {mode, backend, dynamic, fullgraph}`: torch.compile's own arguments."""

    mode: str | None = None  # default | reduce-overhead | max-autotune ...
    backend: str = "inductor"  # inductor | aot_eager | eager ...
    dynamic: bool | None = None
    fullgraph: bool = False


STRATEGIES = ("ddp", "fsdp")  # `distributed.strategy`
# a cell over several nodes: one agent per node, told by the Slurm job its node and the rendezvous on the first node
NODE_RANK_ENV, RDZV_ENV, RDZV_ID_ENV = "PEFT_BENCH_NODE_RANK", "PEFT_BENCH_RDZV_ENDPOINT", "PEFT_BENCH_RDZV_ID"


@dataclass
class DistributedOptions:
    """`distributed: {nproc, strategy, nnodes}`: the cell's ranks, started by torchrun (gloo on CPU, NCCL on CUDA)."""

    nproc: int = 1  # ranks per node (GPU cells: one GPU each)
    strategy: str = "ddp"  # ddp: replicated model, gradient all-reduce | fsdp: FSDP2 fully_shard per block
    nnodes: int = 1  # > 1: Slurm only (one task per node, torchrun's c10d rendezvous on the first node)
    timeout_s: float = 300.0  # collective timeout: a dead rank ends the cell instead of hanging it

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.nproc < 1 or self.nnodes < 1 or self.timeout_s <= 0:
            raise ValueError("nproc and nnodes must be >= 1 and timeout_s > 0")

    def label(self) -> str:
        """The run-id part: `ddp2`, `fsdp4`; over several nodes ranks per node x nodes: `fsdp8x2`."""
        return f"{self.strategy}{self.nproc}" + (f"x{self.nnodes}" if self.nnodes > 1 else "")


DEVICES = ("auto", "cpu", "cuda")

TABLE: tuple[Default, ...] = (
    Default("steps", int, 20, "optimizer steps, warm-up included", True, 1),
    Default("warmup_steps", int, 2, "first steps excluded from timing", True, 0),
    Default("batch_size", int, 8, "the EFFECTIVE batch; micro-batch = batch_size / grad_accum (must divide)", True, 1),
    Default("seq_len", int, 64, "tokens per training sequence (fixed length for cost tasks)", True, 1),
    Default("lr", float, 1e-3, "AdamW learning rate", True, 1e-12),
    Default(
        "seed", int, 0, "seed of weights, data order and dropout (also an axis: `matrix.seed: [0, 1, 2]`)", False, 0
    ),
    Default("repeats", int, 1, "run every cell with seeds seed, seed+1, ... (the seed is in the run id)", False, 1),
    Default("timeout_s", float, 1800.0, "per cell; its whole process tree is killed after it", True, 1e-12),
    Default("device", str, "auto", "auto | cpu | cuda (auto: cuda when a GPU is visible)", False, None, DEVICES),
    Default("eval_batch_size", (int, type(None)), None, "null: the training micro-batch", True, 1),
    Default("eval_before", bool, True, "score the untrained model too (false: pure cost cells, faster)", True),
    Default(
        "eval_every",
        int,
        0,
        "score every N optimizer steps (0: off) into score_curve; paused out of the timed steps' time, memory, energy",
        True,
        0,
    ),
    Default("save_checkpoint", bool, True, "save what the method trains and count its bytes", False),
    Default(
        "allow_emulated_precision",
        bool,
        False,
        "run bf16 on a CPU without native bf16 (recorded emulated: true) instead of `unsupported`",
        False,
    ),
    Default(
        "inference",
        (dict, type(None)),
        None,
        "opt-in phase after save, e.g. `{new_tokens: 64, batch: 1}`: generation cost of base / adapter / merged",
        True,
    ),
    Default(
        "lm_eval",
        (dict, type(None)),
        None,
        "lm-evaluation-harness scores before and after training, e.g. `{tasks: [my_mc], include_path: DIR, limit: "
        "100}` (causal LM; pip install -e .[lm-eval])",
        True,
    ),
    Default(
        "cuda_alloc_conf",
        str,
        "expandable_segments:True",
        "PYTORCH_CUDA_ALLOC_CONF for GPU cells ('' leaves the environment's own)",
        False,
    ),
)
BY_KEY: dict[str, Default] = {d.key: d for d in TABLE}
VALUES: dict[str, Any] = {d.key: d.value for d in TABLE}
ENTRY_OVERRIDES: tuple[str, ...] = tuple(d.key for d in TABLE if d.entry_override)


def describe() -> str:
    """A plain-text table of every default, for the CLI."""
    width = max(len(d.key) for d in TABLE)
    return "\n".join(f"{d.key:{width}s}  {d.value!r:26s} {d.help}" for d in TABLE)


def markdown_table() -> str:
    """The README's defaults table (a test keeps the README in step with it)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for d in TABLE:
        value = "null" if d.value is None else str(d.value).lower() if isinstance(d.value, bool) else d.value
        lines.append(f"| `{d.key}` | `{value}` | {d.help}{' (entry override)' if d.entry_override else ''} |")
    return "\n".join(lines)
