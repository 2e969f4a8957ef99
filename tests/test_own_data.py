"""Tasks over the user's own files: the same data through `text-cls` gives the same score as the bundled task."""

from __future__ import annotations

import csv

import pytest

from conftest import cli, make_suite, run_cell_inproc

N_TRAIN, N_EVAL = 48, 32


def export_tweets(tmp_path):
    """tweet-sentiment's own train and eval split (same seed), as two CSV files with string labels."""
    import datasets

    from bench.models import assets
    from bench.tasks.tweets import dedup_binary, stratified_split

    ds = datasets.load_dataset("csv", data_files=str(assets.tweets_csv()), encoding="latin-1", split="train")
    items = dedup_binary(ds.to_list())
    train_idx, eval_idx = stratified_split(items, N_TRAIN, N_EVAL, 0)
    names = {0: "negative", 1: "positive"}
    paths = []
    for name, idx in (("train", train_idx), ("eval", eval_idx)):
        path = tmp_path / f"{name}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["tweet", "sentiment"])
            writer.writerows([items[i][0], names[items[i][1]]] for i in idx)
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_text_cls_on_the_exported_tweet_split_scores_the_same(tmp_path):
    train, evals = export_tweets(tmp_path)
    common = dict(model="minilm-l6", method="lora", method_options={"r": 4}, steps=4, batch_size=8, seq_len=32, lr=3e-3)
    ours = run_cell_inproc(
        tmp_path / "tweets", task="tweet-sentiment", task_options={"n_train": N_TRAIN, "n_eval": N_EVAL}, **common
    )
    theirs = run_cell_inproc(
        tmp_path / "files",
        task="text-cls",
        task_options={"train_file": train, "eval_file": evals, "text_field": "tweet", "label_field": "sentiment"},
        **common,
    )
    assert ours["status"] == theirs["status"] == "success", (ours.get("error"), theirs.get("error"))
    for key in ("score_before", "score_after", "macro_f1_after", "majority_baseline_after", "final_loss"):
        assert theirs["metrics"][key] == ours["metrics"][key], key
    assert theirs["task_info"]["data"]["labels"] == ["negative", "positive"]


def test_bad_data_is_one_line_naming_the_file_row_and_field(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("text,label\nhello there,a\nbye now,b\nhi,a\nok then,b\n")
    missing_field = make_suite(
        tmp_path,
        {"method": ["full"]},
        name="m",
        model="minilm-l6",
        task={"name": "text-cls", "train_file": str(good), "eval_fraction": 0.5, "label_field": "sentiment"},
    )
    res = cli("run", str(missing_field), "--out", str(tmp_path / "o1"))
    assert res.returncode == 1
    rec = (tmp_path / "o1" / "results.jsonl").read_text()
    assert "no field 'sentiment'" in rec and "'text', 'label'" in rec
    res = cli(
        "run",
        str(
            make_suite(
                tmp_path,
                {"method": ["full"]},
                name="n",
                model="minilm-l6",
                task={"name": "text-cls", "train_file": str(tmp_path / "nope.csv"), "eval_fraction": 0.5},
            )
        ),
        "--dry-run",
    )
    assert res.returncode == 2 and "nope.csv" in res.stderr and "Traceback" not in res.stderr
    empty_row = tmp_path / "bad.csv"
    empty_row.write_text("text,label\nhello,a\n,b\nhi,a\n")
    from bench.tasks.local_files import DataError, field_values, read_rows

    with pytest.raises(DataError, match=r"bad.csv: row 2: field 'text'"):
        field_values(read_rows(str(empty_row)), str(empty_row), "text", str)
