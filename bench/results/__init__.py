"""What cells produce and where it is kept: the metric table, the record schema, results.jsonl, run dirs."""
