"""Model sources, loading and building (random weights from a config), precision and parameter counts."""
