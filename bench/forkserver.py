"""Fork server: imports the heavy libraries once, then forks a fresh child per cell.

Protocol (JSON lines): the runner writes {"run_dir": DIR, "env": {...}} to stdin; the server answers
{"pid": P} at once and
{"exit": P, "code": C} when that child ends (C < 0: killed by signal -C). Each child starts a new session,
sends its stdout/stderr to DIR's logs and runs bench.child.run_cell(DIR): the same file contract as spawn.
Nothing initialises CUDA or starts a thread in the server before it forks.
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
    "peft",
    "transformers.models.llama.modeling_llama",
    "transformers.models.bert.modeling_bert",
    "bench.child",
    "bench.train",
    "bench.models",
    "bench.methods.peft_methods",
    "bench.methods.prompt_methods",
    "bench.tasks.synthetic",
)


def _child(run_dir: Path, env: dict[str, str]) -> None:
    os.setsid()
    os.environ.update(env)  # e.g. CUDA_VISIBLE_DEVICES; CUDA is not initialised yet, so it still applies
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
        from bench.child import run_cell

        run_cell(run_dir)
        code = 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
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

    send({"ready": os.getpid()})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides; Ctrl-C reaches it, not us
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(Path(request["run_dir"]), request.get("env", {}))
        send({"pid": pid})
        threading.Thread(target=reap, args=(pid,), daemon=True).start()


if __name__ == "__main__":
    serve()
