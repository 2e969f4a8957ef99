"""Suite files in, RunSpecs out: YAML loading, defaults, options, validation, matrix expansion."""
