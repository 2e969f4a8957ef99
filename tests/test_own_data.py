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


WORDS = "red blue green cat dog sun moon tree fish bird".split()


def copy_jsonl(path, n, seed):
    """A copy task: `copy : a b c =` -> `a b c`, words from a small set."""
    import json
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(3))
        lines.append(json.dumps({"prompt": f"copy : {words} =", "completion": words}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def sft_task(tmp_path, seq_len=16, **options):
    from bench.models.loading import borrowed_tokenizer
    from bench.tasks.base import TaskContext
    from bench.tasks.sft import SFT, SFTOptions

    tok = borrowed_tokenizer("minilm-l6")
    options.setdefault("train_file", copy_jsonl(tmp_path / "train.jsonl", 8, 1))
    cfg = SFTOptions(eval_fraction=0.25, **options)
    task = SFT(cfg, TaskContext(seq_len=seq_len, seed=0, tokenizer=tok, pad_id=tok.pad_token_id))
    task.load()
    return task, tok


def test_sft_puts_the_loss_on_completion_tokens_only(tmp_path):
    import torch
    import torch.nn.functional as F

    from bench.models.loading import load_model
    from bench.tasks.base import IGNORE

    task, tok = sft_task(tmp_path)
    assert len(task.train) == 6 and len(task.eval) == 2  # eval_fraction 0.25 of 8 rows
    for e in task.train:
        n_prompt = len(e["prompt"])
        assert e["labels"][:n_prompt] == [IGNORE] * n_prompt
        assert e["labels"][n_prompt:] == e["target"] + [tok.sep_token_id]  # the completion and its stop token
    model = load_model("tiny-llama", "causal_lm", None, 0, options={"tokenizer": "minilm-l6"}).model
    batch = task.collate(task.train[:4])
    targets = task.target_count(batch)
    assert targets == sum(len(e["target"]) + 1 for e in task.train[:4])
    loss, logits = task.loss_and_logits(model, batch, targets)
    # the loss is the cross-entropy of completion positions only; counting prompt positions too would differ
    shifted, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    only_completion = F.cross_entropy(shifted.transpose(1, 2), labels, ignore_index=IGNORE, reduction="sum")
    assert torch.allclose(loss * targets, only_completion, rtol=1e-4)
    everything = F.cross_entropy(shifted.transpose(1, 2), batch["input_ids"][:, 1:], reduction="sum")
    assert not torch.allclose(loss * targets, everything, rtol=1e-2)


def test_sft_packing_and_chat_turns_and_bad_rows(tmp_path):
    import json

    from bench.tasks.local_files import DataError

    packed, _ = sft_task(tmp_path, seq_len=24, packing=True)
    assert packed.train and all(len(e["input_ids"]) == 24 for e in packed.train)  # one shape, no padding
    chat = tmp_path / "chat.jsonl"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    chat.write_text("\n".join(json.dumps({"messages": turns}) for _ in range(4)))
    with pytest.raises(DataError, match=r"chat.jsonl: row 1: field 'messages': the tokenizer has no chat template"):
        sft_task(tmp_path, messages_field="messages", train_file=str(chat))  # minilm's tokenizer has none
    with pytest.raises(DataError, match=r"no field 'answer'; the file has 'prompt', 'completion'"):
        sft_task(tmp_path, completion_field="answer")


@pytest.mark.slow
def test_sft_learns_a_copy_task_with_a_borrowed_tokenizer(tmp_path):
    rec = run_cell_inproc(
        tmp_path / "run",
        model="tiny-llama",
        model_options={"tokenizer": "minilm-l6"},
        task="sft",
        task_options={
            "train_file": copy_jsonl(tmp_path / "train.jsonl", 400, 1),
            "eval_file": copy_jsonl(tmp_path / "eval.jsonl", 16, 2),
            "max_new_tokens": 5,
        },
        steps=80,
        warmup_steps=1,
        batch_size=16,
        lr=3e-3,
    )
    assert rec["status"] == "success", rec.get("error")
    m = rec["metrics"]
    assert m["score_before"] == 0.0 and m["score_after"] > 0.5, (m["score_before"], m["score_after"])
    assert m["token_f1_after"] >= m["score_after"] and m["completion_loss_after"] < m["completion_loss_before"]
    assert rec["model_info"]["tokenizer"].startswith("minilm-l6")
    assert rec["model_info"]["vocab_size_from_tokenizer"] == [256, 30522]


def test_lm_text_packs_a_text_file_and_scores_perplexity(tmp_path):
    from bench.models.loading import borrowed_tokenizer
    from bench.tasks.base import TaskContext
    from bench.tasks.local_files import DataError, LMText, LMTextOptions

    text = tmp_path / "notes.txt"
    text.write_text("\n".join(f"the {w} is near the {v} today" for w in WORDS for v in WORDS) + "\n\n")
    tok = borrowed_tokenizer("minilm-l6")
    ctx = TaskContext(seq_len=32, seed=0, tokenizer=tok, pad_id=tok.pad_token_id)
    task = LMText(LMTextOptions(train_file=str(text), eval_fraction=0.1), ctx)
    task.load()
    assert all(len(e["input_ids"]) == 32 for e in task.train) and len(task.train) > 10
    assert task.eval and task.info()["eval_sequences"] == len(task.eval)
    short = tmp_path / "short.txt"
    short.write_text("one line\nanother\n")
    with pytest.raises(DataError, match=r"short.txt: field 'text' gives \d+ tokens, fewer than seq_len 32"):
        LMText(LMTextOptions(train_file=str(short), eval_file=str(text)), ctx).load()


def test_a_bad_tokenizer_option_is_refused_at_suite_load(tmp_path):
    matrix = {"model": [{"name": "tiny-llama", "tokenizer": "tiny-bert"}], "task": ["reverse"], "method": ["full"]}
    suite = make_suite(tmp_path, matrix, name="tk")
    res = cli("run", str(suite), "--dry-run")
    assert res.returncode == 2 and "tokenizer 'tiny-bert': a named config has no tokenizer" in res.stderr


def test_the_shipped_example_suite_loads_and_its_data_is_what_make_py_writes(tmp_path, monkeypatch):
    import importlib.util
    import shutil
    from pathlib import Path

    root = Path(__file__).parent.parent
    spec = importlib.util.spec_from_file_location("make_examples", root / "examples" / "data" / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    (tmp_path / "lm_eval").mkdir()
    monkeypatch.setattr(make, "HERE", tmp_path)
    make.main()
    shipped = root / "examples" / "data"
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        assert path.read_bytes() == (shipped / path.relative_to(tmp_path)).read_bytes(), path.name
    shutil.rmtree(tmp_path / "lm_eval")
    res = cli("run", str(root / "suites" / "own-data.yaml"), "--dry-run", cwd=root)
    assert res.returncode == 0, res.stderr
    assert "4 cells" in res.stdout + res.stderr
