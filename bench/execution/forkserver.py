"""Fork server: imports the heavy libraries once, then forks a fresh child per cell.

`python -m bench.execution.forkserver [MODULE,...]`: the always-needed libraries (PRELOAD), the optional ones the
suite's cells import (bench.cell.steps.cell_imports: peft only where a cell's method needs it, bitsandbytes for a
quantized base, lm-eval for standard scores), and PRELOAD_ENV's.

Protocol (JSON lines): the server first says {"ready": PID, "cuda_initialized": bool, "preloaded": [...]}; the
runner writes {"run_dir": DIR, "env": {...}} to stdin; the server answers {"pid": P} at once and
{"exit": P, "code": C} when that child ends (C < 0: killed by signal -C). Each child starts a new session,
applies its env (CUDA_VISIBLE_DEVICES, PYTORCH_CUDA_ALLOC_CONF: CUDA is not initialised yet, so they still
apply), dies with the server, sends its stdout/stderr to DIR's logs and runs bench.cell.run_cell(DIR).
Nothing initialises CUDA or starts a thread in the server before it forks; the ready message says so and the
launcher refuses a server that did.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

PRELOAD = (
    "torch",
    "transformers",
    "accelerate",
    "transformers.models.llama.modeling_llama",
    "transformers.models.bert.modeling_bert",
    "bench.cell",
    "bench.cell.steps",
    "bench.cell.train",
    "bench.models.loading",
    "bench.methods.peft_methods",
    "bench.methods.prompt_methods",
    "bench.tasks.synthetic",
)
PRELOAD_ENV = "PEFT_BENCH_FORKSERVER_PRELOAD"  # extra modules to import once (e.g. a plugin), comma-separated


def _child(run_dir: Path, env: dict[str, str]) -> None:
    os.setsid()
    os.environ.update(env)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    out = os.open(run_dir / "stdout.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(run_dir / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    code = 1
    try:
        from bench.cell import PARENT_ENV, die_with_parent, run_cell

        os.environ[PARENT_ENV] = str(os.getppid())
        die_with_parent()
        run_cell(run_dir)
        code = 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def preload(suite_modules: list[str]) -> list[str]:
    import importlib

    extra = [m for m in os.environ.get(PRELOAD_ENV, "").split(",") if m.strip()]
    names = list(dict.fromkeys([*PRELOAD, *suite_modules, *extra]))
    for name in names:
        importlib.import_module(name.strip())
    return names


def cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def serve(suite_modules: list[str]) -> None:
    from bench.cell import die_with_parent

    die_with_parent()  # a runner killed with SIGKILL takes its fork server (and so its cells) along
    names = preload(suite_modules)
    import gc

    gc.collect()
    gc.freeze()  # preloaded objects stay out of the children's GC: no copy-on-write of the whole heap
    out_lock = threading.Lock()
    reply = sys.stdout

    def send(msg: dict) -> None:
        with out_lock:
            reply.write(json.dumps(msg) + "\n")
            reply.flush()

    def reap(pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        send({"exit": pid, "code": code})

    send({"ready": os.getpid(), "cuda_initialized": cuda_initialized(), "preloaded": names})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides; Ctrl-C reaches it, not us
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(Path(request["run_dir"]), request.get("env", {}))
        send({"pid": pid})
        threading.Thread(target=reap, args=(pid,), daemon=True).start()


if __name__ == "__main__":
    serve([m for m in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if m])
