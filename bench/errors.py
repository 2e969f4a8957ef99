"""Exceptions that carry meaning across the harness."""

OOM_TEXT = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED")


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
