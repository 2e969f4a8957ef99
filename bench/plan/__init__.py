"""Before anything runs: the memory estimate, the wall-time forecast and the dry run."""
