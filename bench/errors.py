"""Exceptions that carry meaning across the harness."""

OOM_TEXT = (
    "CUDA out of memory",
    "OutOfMemoryError",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "DefaultCPUAllocator: can't allocate memory",  # a CPU cell past its memory limit (peft-bench fit)
    "MemoryError",
)


def looks_like_oom(text: str) -> bool:
    """True when an error message or stderr tail is a device out-of-memory failure."""
    return any(s in text for s in OOM_TEXT)


class Unsupported(Exception):
    """This cell cannot run as labelled here (hardware, model or method limits); recorded as `unsupported`."""


class Diverged(RuntimeError):
    """The training loss became non-finite: the cell is `failed`; `losses` keeps the curve up to that step."""

    def __init__(self, step: int, value: float, losses: list[float]):
        self.step, self.value, self.losses = step, value, list(losses)
        super().__init__(f"Diverged: loss {value} at step {step} (lower the lr, or check the data)")


class SuiteError(ValueError):
    """A suite or CLI input is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RegistryError(ValueError):
    """A plugin name is unknown or registered twice."""


class OutputError(OSError):
    """An output (out dir, lock, results file, report file) cannot be written: one line naming it, exit 2."""

    def __init__(self, path: object, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {path}: {reason}")


def probe_writable(directory: object) -> None:
    """Create the directory and a probe file in it, or raise OutputError naming the path and the reason."""
    import os
    from pathlib import Path

    path = Path(str(directory))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except FileExistsError:
        raise OutputError(path, "a file is in the way (the out dir must be a directory)") from None
    except NotADirectoryError:
        raise OutputError(path, "a parent of it is a file, not a directory") from None
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from None
    for name in ("results.jsonl", ".lock"):
        target = path / name
        if target.exists() and not os.access(target, os.W_OK):
            raise OutputError(target, "not writable by this user")
