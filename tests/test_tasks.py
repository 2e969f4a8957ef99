"""Tasks and scores: deterministic de-duplicated splits, hand-checked metrics, before/after scores, forgetting,
and a clear error for hub tasks offline."""

import csv

import pytest

from bench.scoring import accuracy, exact_match, macro_f1
from bench.tasks.base import TaskContext
from bench.tasks.hub import SST2, HubOptions, HubUnavailable, final_number
from bench.tasks.tweets import TweetOptions, TweetSentiment, dedup_binary, stratified_split
from conftest import run_cell_inproc


def test_metrics_on_hand_computed_cases():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    # class 0: tp 0 fp 1 fn 1 -> F1 0; class 1: tp 2 fp 1 fn 1 -> F1 2/3; macro 1/3
    assert macro_f1([1, 0, 1, 1], [1, 1, 1, 0], labels=[0, 1]) == pytest.approx(1 / 3)
    assert macro_f1([0, 0], [0, 0], labels=[0, 1]) == pytest.approx(0.5)
    assert exact_match([[1, 2], [3]], [[1, 2], [4]]) == 0.5
    assert final_number("so she pays 1,250 dollars.\n#### 1,250") == "1250"
    assert final_number("no digits") is None


def rows(n_pos, n_neg, n_neu=3):
    out = [{"sentiment": "positive", "text": f"good thing number {i}"} for i in range(n_pos)]
    out += [{"sentiment": "negative", "text": f"bad thing number {i}"} for i in range(n_neg)]
    out += [{"sentiment": "neutral", "text": f"meh {i}"} for i in range(n_neu)]
    return out


def test_dedup_drops_neutral_duplicates_and_conflicts():
    data = rows(3, 3) + [
        {"sentiment": "positive", "text": "Good  THING number 0"},  # duplicate after normalising
        {"sentiment": "negative", "text": "good thing number 1"},
    ]  # conflicting label
    items = dedup_binary(data)
    texts = [t for t, _ in items]
    assert "good thing number 1" not in texts and len(items) == 5
    assert all(label in (0, 1) for _, label in items)


def test_split_is_deterministic_stratified_and_disjoint():
    items = dedup_binary(rows(30, 70))
    a = stratified_split(items, 40, 20, seed=1)
    assert a == stratified_split(items, 40, 20, seed=1)
    assert a != stratified_split(items, 40, 20, seed=2)
    train, evals = a
    assert len(train) == 40 and len(evals) == 20 and not set(train) & set(evals)
    assert sum(items[i][1] for i in evals) == 6  # 30% positive, as in the corpus
    with pytest.raises(ValueError, match="after de-duplication"):
        stratified_split(items, 90, 20, seed=1)


class CharTokenizer:
    def __call__(self, texts, truncation=True, max_length=16):
        return {"input_ids": [[5 + (ord(c) % 200) for c in t][:max_length] for t in texts]}


def test_tweet_task_loads_a_csv_through_datasets(tmp_path):
    path = tmp_path / "tweets.csv"
    with open(path, "w", encoding="latin-1", newline="") as fh:
        w = csv.DictWriter(fh, ["sentiment", "confidence", "text"])
        w.writeheader()
        for r in rows(30, 70):
            w.writerow({**r, "confidence": 1.0})
    task = TweetSentiment(
        TweetOptions(n_train=40, n_eval=20, data_path=str(path)),
        TaskContext(seq_len=16, seed=0, tokenizer=CharTokenizer()),
    )
    task.load()
    assert len(task.train) == 40 and len(task.eval) == 20
    assert not set(task.train_ids) & set(task.eval_ids)
    assert task.majority_baseline == pytest.approx(0.7)


def test_hub_task_offline_fails_with_a_clear_message(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import time: an imported library needs its flags set too
    for module in (datasets.config, huggingface_hub.constants):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(HubUnavailable, match="dataset glue/sst2 .* Hugging Face hub"):
        SST2(HubOptions(), TaskContext(seq_len=16, seed=0, tokenizer=CharTokenizer())).load()


@pytest.mark.parametrize("method", ["full", "lora", "ia3", "prompt", "adapter", "bitfit", "freeze", "ptuning"])
def test_score_before_and_after_recorded_for_every_method(tmp_path, method):
    res = run_cell_inproc(tmp_path, model="tiny-bert", method=method, save_checkpoint=False)
    assert res["status"] == "success", res.get("error")
    m = res["metrics"]
    assert 0 <= m["score_before"] <= 1 and 0 <= m["score_after"] <= 1
    assert m["accuracy_before"] == m["score_before"] and "macro_f1_after" in m
    assert res["task_info"]["synthetic"] is True and m["forgetting_delta"] is None
    assert "causal-LM" in res["missing_reason"]["forgetting_delta"]


def test_forgetting_is_measured_for_causal_lm(tmp_path):
    res = run_cell_inproc(
        tmp_path,
        model="tiny-llama",
        task="reverse",
        method="prompt",
        steps=3,
        task_options={"n_train": 32, "n_eval": 8},
    )
    assert res["status"] == "success", res.get("error")
    m = res["metrics"]
    assert m["forgetting_delta"] == pytest.approx(m["general_loss_after"] - m["general_loss_before"])
    assert res["task_info"]["general_text"] == "random token sequences"
    assert res["task_info"]["metric"] == "exact_match"
