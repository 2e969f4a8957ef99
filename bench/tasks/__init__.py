"""Built-in tasks; each is registered under the `peft_bench.tasks` entry-point group in pyproject.toml."""
