"""Knowledge injection (`facts`): new facts trained under one phrasing, recalled under it and under held-out
paraphrases; forgetting beside them; the report's table."""

from __future__ import annotations

import contextlib

import pytest

from conftest import cli, make_suite, read_jsonl


def test_text_facts_hold_out_paraphrases_of_the_facts_never_trained_paraphrased():
    from bench.models.loading import load_model
    from bench.tasks.base import TaskContext
    from bench.tasks.facts import VALUES, Facts, FactsOptions

    loaded = load_model("tiny-llama", "causal_lm", None, 0, options={"tokenizer": "minilm-l6"})
    tok = loaded.tokenizer
    ctx = TaskContext(seq_len=24, seed=0, tokenizer=tok, model_config=loaded.model.config, pad_id=tok.pad_token_id)
    task = Facts(FactsOptions(n_facts=10, paraphrases=2, bridge_fraction=0.4), ctx)
    task.load()
    assert len(task.eval) == 10 and task.n_bridge == 4 and len(task.eval_paraphrase) == (10 - 4) * 2
    assert len(task.train) == 10 + 4 * 2  # every fact once, the bridge facts under both paraphrases too
    trained = {tuple(e["prompt"]) for e in task.train}
    assert not trained & {tuple(e["prompt"]) for e in task.eval_paraphrase}  # never seen paraphrased
    first = task.eval[0]
    assert tok.decode(first["target"]).strip() in VALUES and "lives in the city of" in tok.decode(first["prompt"])
    assert task.info()["kind"] == "text"
    scores = task.evaluate(loaded.model, "cpu", 8, contextlib.nullcontext)
    assert set(scores) == {"score", "recall", "score_paraphrase"} and scores["score"] == scores["recall"]


@pytest.mark.slow
def test_full_fine_tuning_injects_the_facts_and_the_report_shows_recall_paraphrase_and_forgetting(tmp_path):
    from bench import report

    suite = make_suite(
        tmp_path,
        {"method": ["full", {"name": "lora", "r": 8}]},
        name="facts",
        task={"name": "facts", "n_facts": 64},
        steps=120,
        batch_size=32,
        lr=3e-3,
        save_checkpoint=False,
        eval_batch_size=64,
    )
    res = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    recs = {r["spec"]["method"]: r for r in read_jsonl(tmp_path / "out" / "results.jsonl")}
    full = recs["full"]["metrics"]
    assert full["score_before"] < 0.2 and full["score_after"] >= 0.9, full["score_after"]
    for rec in recs.values():
        m = rec["metrics"]
        assert {"score_paraphrase_before", "score_paraphrase_after", "forgetting_delta"} <= set(m)
    md = report.to_markdown(report.load(tmp_path / "out"))
    assert "| method | precision | ga | recall | paraphrase recall | forgetting Δ |" in md
    assert any(line.startswith("| full | fp32 | 1 | 0") and "→ 1.00 |" in line for line in md.splitlines()), md
