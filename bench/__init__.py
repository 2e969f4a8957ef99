"""peft-bench: measure what parameter-efficient fine-tuning methods cost and what they reach."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2
