"""Standard scores through lm-evaluation-harness (`lm_eval`, the optional extra `pip install -e .[lm-eval]`).

The cell's model as it is — adapter attached, in memory — goes through lm-eval's own HF model wrapper (`HFLM`), so a
score is the one `lm_eval --model hf` gives for the same weights. Task YAMLs over local files (`include_path`) work
offline; a task whose data is on the hub fails at once there, naming the task and why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LmEvalOptions:
    tasks: list[str] = field(default_factory=list)
    include_path: str = ""  # a directory of custom task YAMLs (e.g. multiple choice over a local JSONL)
    limit: int | float | None = None  # items per task (a float < 1: that share)
    num_fewshot: int | None = None
    batch_size: int | None = None  # default: the cell's eval batch

    def __post_init__(self):
        if not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            raise ValueError("lm_eval.tasks: give a non-empty list of task names")
        if self.include_path and not os.path.isdir(self.include_path):
            raise ValueError(f"lm_eval.include_path {self.include_path!r} is not a directory")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"lm_eval.limit must be > 0, got {self.limit}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"lm_eval.num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"lm_eval.batch_size must be >= 1, got {self.batch_size}")


INSTALL = "pip install -e '.[lm-eval]' (or pip install lm_eval)"


def metric_name(task: str, key: str, when: str) -> str:
    """`acc,none` of task `local-mc` before training -> `lm_eval_local_mc_acc_before` (a filter other than `none`
    joins the name)."""
    metric, _, filt = key.partition(",")
    parts = [task, metric] + ([filt] if filt and filt != "none" else [])
    return "lm_eval_" + "_".join(re.sub(r"[^a-z0-9]+", "_", p.lower()).strip("_") for p in parts) + f"_{when}"


def flatten(results: dict[str, dict[str, Any]], when: str) -> dict[str, float]:
    out = {}
    for task, figures in results.items():
        for key, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "," in key:
                out[metric_name(task, key, when)] = float(value)
    return out


class PrefixTrimmed:
    """A model whose logits cover only the positions it was given: soft-prompt methods prepend virtual positions,
    and lm-eval reads continuation logits by position."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, input_ids: Any = None, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(input_ids, *args, **kwargs)
        out.logits = out.logits[:, -input_ids.shape[1] :]
        return out


def task_manager(opts: LmEvalOptions, cache: dict[str, Any]) -> Any:
    """lm-eval's task index (built once per cell), after checking the names. Tasks that all lie in include_path
    (tasks, not groups or tags, which may name lm-eval's own) are indexed from there alone; otherwise every task YAML
    lm-eval ships is read (~15k, seconds of CPU per cell)."""
    from bench.options import suggest

    manager = indexed(opts, cache)
    known = set(manager.all_tasks)
    unknown = [t for t in opts.tasks if t not in known]
    if unknown:
        hint = suggest(unknown[0], sorted(known))
        where = f" or in include_path {opts.include_path}" if opts.include_path else " (give include_path for your own)"
        raise ValueError(f"lm_eval: unknown task(s) {unknown}{hint}: not among lm-eval's {len(known)} tasks{where}")
    return manager


def indexed(opts: LmEvalOptions, cache: dict[str, Any]) -> Any:
    from lm_eval.tasks import TaskManager

    if opts.include_path:
        key = f"tm-local:{opts.include_path}"
        if key not in cache:
            cache[key] = TaskManager(include_path=opts.include_path, include_defaults=False)
        if set(opts.tasks) <= set(getattr(cache[key], "all_subtasks", ())):  # tasks, not groups or tags
            return cache[key]
    key = f"tm:{opts.include_path}"
    if key not in cache:
        cache[key] = TaskManager(include_path=opts.include_path or None)
    return cache[key]


def harness_model(model: Any, tokenizer: Any, batch_size: int, compute_dtype: Any, trim_prefix: bool) -> tuple:
    """(lm-eval's HF wrapper around the in-memory model, the add_bos_token it was given)."""
    from lm_eval.models.huggingface import HFLM

    prefix = next(
        (i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.cls_token_id) if i is not None), None
    )
    # a tokenizer without BOS (BERT's) wraps every text in CLS ... SEP: a context would then not be a prefix of
    # context + continuation, so such texts are encoded without special tokens
    add_bos = None if tokenizer.bos_token_id is not None else False
    lm = HFLM(
        pretrained=PrefixTrimmed(model) if trim_prefix else model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        prefix_token_id=prefix,
        add_bos_token=add_bos,
        mixed_precision_dtype=compute_dtype,
    )
    return lm, add_bos


def lm_eval_scores(
    model: Any,
    tokenizer: Any,
    options: dict[str, Any],
    when: str,
    batch_size: int,
    compute_dtype: Any,
    trim_prefix: bool,
    cache: dict[str, Any],
    hub_unreachable: Callable[[], str | None],
) -> tuple[dict[str, float], dict[str, Any]]:
    """(`lm_eval_<task>_<metric>_<when>` figures, what the record keeps of lm-eval's results) for `model` now;
    `hub_unreachable()` says why the hub cannot be reached (None: it answers), asked only when data fails to load."""
    import lm_eval

    opts = LmEvalOptions(**options)
    if tokenizer is None:
        raise ValueError("lm_eval needs a tokenizer: give the model entry `tokenizer:`")
    if os.environ.get("HF_HUB_OFFLINE"):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # fail at once instead of retrying
    manager = task_manager(opts, cache)
    model.eval()
    lm, add_bos = harness_model(model, tokenizer, opts.batch_size or batch_size, compute_dtype, trim_prefix)
    try:
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=opts.tasks,
            task_manager=manager,
            limit=opts.limit,
            num_fewshot=opts.num_fewshot,
            log_samples=False,
        )
    except Exception as exc:
        why_offline = hub_unreachable()
        if not why_offline:
            raise
        raise ValueError(
            f"lm_eval tasks {opts.tasks}: their data could not be loaded and the hub is unreachable ({why_offline}): "
            f"{type(exc).__name__}: {str(exc)[:200]}; offline, use task YAMLs over local files (include_path)"
        ) from exc
    kept = {
        "version": lm_eval.__version__,
        "tasks": opts.tasks,
        "limit": opts.limit,
        "add_bos_token": add_bos,
        "n_shot": res.get("n-shot"),
        "n_samples": res.get("n-samples"),
        when: res["results"],
    }
    return flatten(res["results"], when), kept
