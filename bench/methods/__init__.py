"""Built-in methods; each is registered under the `peft_bench.methods` entry-point group in pyproject.toml."""
