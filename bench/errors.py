"""Exceptions that carry meaning across the harness."""


class Unsupported(Exception):
    """This cell cannot run as labelled here (hardware, model or method limits); recorded as `unsupported`."""


class SuiteError(ValueError):
    """A suite or CLI input is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RegistryError(ValueError):
    """A plugin name is unknown or registered twice."""
