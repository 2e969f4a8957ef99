"""Facts about the machine a cell runs on: CPU instruction sets, library versions, GPU peaks."""
