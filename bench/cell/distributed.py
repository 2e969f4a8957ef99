"""A cell over several ranks: torch.distributed in every rank process (started by torchrun through
bench.cell.ranks), the model wrapped by DDP or sharded by FSDP2, each rank training an equal share of every
effective batch, the ranks' figures gathered on rank 0 (the one that writes the cell's result).

Single-process cells never import this module's torch.distributed parts: `Ranks` is None for them.
"""

from __future__ import annotations

import os
import resource
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.cell.comm import CommClock
from bench.errors import Unsupported
from bench.suite.defaults import NODE_RANK_ENV, DistributedOptions

STAT_KEYS = ("timed_tokens", "timed_padded_tokens", "timed_samples", "all_tokens")  # summed over ranks


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int
    strategy: str
    backend: str
    comm: CommClock = field(default_factory=CommClock, compare=False)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        nnodes = self.world // int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        return {"world_size": self.world, "strategy": self.strategy, "backend": self.backend, "nnodes": nnodes}


def rank_of_env() -> int | None:
    """This process's global rank when torchrun started it, else None."""
    return int(os.environ["RANK"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else None


def init(spec: Any, device: str) -> Ranks:
    """Join the cell's process group (NCCL on CUDA, gloo on CPU) with the collective timeout of the spec."""
    import torch
    import torch.distributed as dist

    if rank_of_env() is None:
        raise RuntimeError("a distributed cell must be started by torchrun (bench.cell.ranks); use --launcher spawn")
    opts = DistributedOptions(**spec.distributed)
    local = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=timedelta(seconds=opts.timeout_s))
    return Ranks(dist.get_rank(), dist.get_world_size(), local, opts.strategy, backend, CommClock(device == "cuda"))


def wrap(model: Any, ranks: Ranks, mixed_precision: str, device: str) -> Any:
    """The module training runs through: DDP around the model, or the model itself sharded in place by FSDP2
    (`fully_shard` per transformer block, then the root; bf16/fp16 compute with fp32 gradient reduction)."""
    import torch

    if ranks.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[ranks.local_rank] if device == "cuda" else None)
        ddp.register_comm_hook(None, ranks.comm.ddp_hook())
        ranks.comm.hooked = True
        return ddp
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from bench.models.blocks import transformer_blocks

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
    try:
        blocks = transformer_blocks(model)
    except Unsupported as exc:
        raise Unsupported(f"FSDP: {exc} to shard") from exc
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    ranks.comm.install_fsdp([*blocks, model])
    return model


def grad_sync(model: Any, last: bool) -> Any:
    """Gradients are reduced across ranks on the effective batch's last micro-batch only (DDP's no_sync, FSDP2's
    set_requires_gradient_sync), as a user accumulating over micro-batches would."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
        return nullcontext()
    return nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()


def reduce_loss(step_loss: Any) -> Any:
    """The effective batch's loss: the sum of every rank's share (each already divided by the global count)."""
    import torch.distributed as dist

    dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
    return step_loss


def gather_ranks(ranks: Ranks, stats: Any, memory: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's figures of the training phase, in rank order (a collective: every rank calls it); `stats`
    becomes the cell's: the slowest rank's time per step and every rank's tokens."""
    import torch.distributed as dist

    kinds = ranks.comm.by_kind()
    mine = {
        "rank": ranks.rank,
        **where_this_rank_runs(ranks),
        "pid": os.getpid(),
        "step_times_s": stats.step_times_s,
        **{k: getattr(stats, k) for k in STAT_KEYS},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "comm_s": None if kinds is None else sum(kinds.values()),
        "comm_s_by_kind": kinds,
        "comm_calls": ranks.comm.timed_launches,
        **{k: memory.get(k) for k in ("torch_peak_allocated_mib", "torch_peak_reserved_mib")},
    }
    every: list[Any] = [None] * ranks.world
    dist.all_gather_object(every, mine)
    stats.step_times_s = [max(times) for times in zip(*(r["step_times_s"] for r in every))]
    for key in STAT_KEYS:
        setattr(stats, key, sum(r[key] for r in every))
    return [{k: v for k, v in r.items() if k != "step_times_s"} | {"step_time_mean_s": _mean(r)} for r in every]


def where_this_rank_runs(ranks: Ranks) -> dict[str, Any]:
    """`node` (the Slurm node's index in the job, 0 on one node), `host` (its name) and `local_rank` (its GPU on
    the node): what a rank's GPU figures are matched by. torchrun numbers ranks by rendezvous order, which need not
    follow the nodes' order, so rank i is not the i-th GPU of a cell over several nodes."""
    from bench.env.facts import node_name

    return {"node": int(os.environ.get(NODE_RANK_ENV) or 0), "host": node_name(), "local_rank": ranks.local_rank}


def _mean(rank: dict[str, Any]) -> float | None:
    times = rank["step_times_s"]
    return sum(times) / len(times) if times else None


def largest(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return max(values) if values else None


def gather_into(c: Any, stats: Any) -> None:
    """The training phase's figures of every rank into the cell: `ranks` per rank, the largest rank's peaks as
    `rank_peak_*`, and `stats` as the whole cell's (slowest rank per step, every rank's tokens)."""
    rows = gather_ranks(c.ranks, stats, c.metrics)
    c.result.ranks = rows
    c.metrics["rank_peak_rss_mib"] = largest(rows, "peak_rss_mib")
    torch_peak = largest(rows, "torch_peak_allocated_mib")
    if torch_peak is None:
        c.missing["rank_peak_torch_allocated_mib"] = c.missing.get("torch_peak_allocated_mib", "not measured")
    c.metrics["rank_peak_torch_allocated_mib"] = torch_peak
    steps = len(stats.step_times_s)  # timed steps (every rank times the same ones)
    shares = [r["comm_s"] / (r["step_time_mean_s"] * steps) for r in rows if steps and _timed(r)]
    c.metrics["comm_share"] = max(shares) if shares else None
    if not shares:
        c.missing["comm_share"] = c.ranks.comm.why_not or "no timed steps"


def _timed(row: dict[str, Any]) -> bool:
    return row.get("comm_s") is not None and bool(row.get("step_time_mean_s"))


def save_cell(c: Any, out_dir: Path) -> dict[str, Any]:
    """DDP: rank 0 saves the method's own checkpoint once; FSDP: every rank writes its shard. The ranks wait for
    each other, so no rank ends (and tears the group down) while another still writes."""
    if c.ranks.strategy == "fsdp":
        import torch

        from bench.methods.full import SHIP_DTYPE

        ship = getattr(torch, SHIP_DTYPE.get(c.spec.precision, "float32")) if c.method_cls.trains_base else None
        info = save_sharded(c.model, out_dir, ship)
    else:
        info = (c.method.save(c.model, out_dir) or {}) if c.ranks.leader else {}
    barrier()
    return info


def save_sharded(model: Any, out_dir: Path, ship_dtype: Any) -> dict[str, Any]:
    """An FSDP cell's checkpoint: the trained tensors gathered whole onto rank 0 (a collective: every rank calls
    it) and written there once as safetensors, so its bytes compare with a one-process cell's."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = {k: v.detach() for k, v in get_model_state_dict(model, options=options).items() if k in trained}
    if not state:  # ranks other than 0 receive nothing
        return {}
    if ship_dtype is not None:
        state = {k: v.to(ship_dtype) for k, v in state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_dir / "trained.safetensors"))
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    return {"saved": "trained tensors gathered from the FSDP shards (rank 0)", "dtype": ",".join(dtypes)}


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()
