"""lm-evaluation-harness as a scorer: a local multiple-choice task over a JSONL, offline, scores the in-memory model
(adapter attached) exactly as scoring the same items by their log-likelihoods directly."""

from __future__ import annotations

import json

import pytest

from conftest import cli, make_suite, mc_task

pytest.importorskip("lm_eval")  # a dev dependency: CI has it; `pip install -e .[lm-eval]` elsewhere


def direct_accuracy(model, tok, items):
    """Each choice scored by the summed log-probability of its tokens after the question (lm-eval's target
    delimiter, a space, before the choice); the highest wins."""
    import torch

    right = 0
    with torch.no_grad():
        for item in items:
            ctx = tok.encode(item["question"], add_special_tokens=False)
            scores = []
            for choice in item["choices"]:
                whole = tok.encode(item["question"] + " " + choice, add_special_tokens=False)
                logits = model(input_ids=torch.tensor([whole])).logits[0, -len(whole) :].float()
                logp = torch.log_softmax(logits, -1)
                scores.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole))))
            right += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
    return right / len(items)


@pytest.mark.slow
def test_a_local_multiple_choice_task_scores_as_the_items_scored_directly(tmp_path, monkeypatch):
    import torch

    from bench.methods.prompt_methods import PromptTuning
    from bench.models.loading import load_model
    from bench.scoring.harness import lm_eval_scores

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items, include = mc_task(tmp_path)
    loaded = load_model("tiny-llama", "causal_lm", None, 0, options={"tokenizer": "minilm-l6"})
    model, tok = loaded.model, loaded.tokenizer
    torch.manual_seed(0)
    cache: dict = {}
    options = {"tasks": ["local_mc"], "include_path": include}
    figures, kept = lm_eval_scores(model, tok, options, "before", 8, None, False, cache, lambda: "offline")
    assert figures["lm_eval_local_mc_acc_before"] == pytest.approx(direct_accuracy(model, tok, items), abs=0.01)
    assert 0 < figures["lm_eval_local_mc_acc_before"] < 1  # a random model: the comparison is not vacuous
    assert kept["before"]["local_mc"]["acc,none"] == figures["lm_eval_local_mc_acc_before"]
    # a soft prompt prepends virtual positions: lm-eval sees the logits of the positions it gave
    from bench.methods.base import MethodContext

    ctx = MethodContext(model_kind="causal_lm", precision="fp32", steps=1, seed=0)
    prompt = PromptTuning(PromptTuning.config_cls(num_virtual_tokens=4), ctx)
    peft_model = prompt.apply(model)
    figures, _ = lm_eval_scores(peft_model, tok, options, "after", 8, None, True, cache, lambda: "offline")
    want = direct_accuracy(lambda input_ids: trimmed(peft_model, input_ids), tok, items)
    assert figures["lm_eval_local_mc_acc_after"] == pytest.approx(want, abs=0.01)


def trimmed(model, input_ids):
    out = model(input_ids=input_ids)
    out.logits = out.logits[:, -input_ids.shape[1] :]
    return out


def test_unknown_and_hub_tasks_offline_are_one_clear_error(tmp_path, monkeypatch):
    from bench.models.loading import load_model
    from bench.scoring.harness import lm_eval_scores

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, include = mc_task(tmp_path, n=2)
    loaded = load_model("tiny-llama", "causal_lm", None, 0, options={"tokenizer": "minilm-l6"})
    cache: dict = {}
    args, rest = (loaded.model, loaded.tokenizer), ("before", 8, None, False)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['local_mcq'\] \(did you mean 'local_mc'\?\)"):
        lm_eval_scores(*args, {"tasks": ["local_mcq"], "include_path": include}, *rest, cache, str)
    offline = lambda: "HF_HUB_OFFLINE is set"  # noqa: E731
    with pytest.raises(ValueError, match=r"\['arc_easy'\]: their data could not be loaded and the hub is unreachable"):
        lm_eval_scores(*args, {"tasks": ["arc_easy"], "limit": 2, "include_path": include}, *rest, cache, offline)
    # a local task alone is indexed from include_path alone; a name beyond it needs the whole index (read once)
    from bench.scoring.harness import LmEvalOptions, indexed

    assert indexed(LmEvalOptions(["local_mc"], include), cache).all_tasks == ["local_mc"]
    assert len(cache[f"tm:{include}"].all_tasks) > 1000 and len(cache) == 2


def test_lm_eval_options_are_checked_at_suite_load(tmp_path):
    bad = make_suite(
        tmp_path, {"method": ["full"]}, name="a", task={"name": "toy-cls"}, lm_eval={"tasks": ["x"], "limt": 3}
    )
    res = cli("run", str(bad), "--dry-run")
    assert res.returncode == 2 and "limt: unknown option (did you mean 'limit'?)" in res.stderr, res.stderr
    seq_cls = make_suite(tmp_path, {"method": ["full"]}, name="b", task={"name": "toy-cls"}, lm_eval={"tasks": ["x"]})
    res = cli("run", str(seq_cls), "--dry-run")
    assert res.returncode == 2 and "lm_eval scores causal LMs; task 'toy-cls'" in res.stderr, res.stderr


@pytest.mark.slow
def test_a_cell_records_lm_eval_before_and_after_and_the_report_shows_them(tmp_path, monkeypatch):
    from bench import report
    from conftest import run_cell_inproc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, include = mc_task(tmp_path, n=8)
    rec = run_cell_inproc(
        tmp_path / "run",
        model_options={"tokenizer": "minilm-l6"},
        task="reverse",
        task_options={"n_train": 64, "n_eval": 8},
        lm_eval={"tasks": ["local_mc"], "include_path": include},
    )
    assert rec["status"] == "success", rec.get("error")
    m = rec["metrics"]
    assert {"lm_eval_local_mc_acc_before", "lm_eval_local_mc_acc_after", "lm_eval_local_mc_acc_stderr_after"} <= set(m)
    assert rec["task_info"]["lm_eval"]["n_samples"]["local_mc"]["effective"] == 8
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "report_records.jsonl"
    shown = json.loads(fixture.read_text().splitlines()[0])  # a full record, with this cell's lm-eval figures
    shown["metrics"].update({k: v for k, v in m.items() if k.startswith("lm_eval_")})
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(shown))
    md = report.to_markdown(report.load(path))
    assert "| method | precision | ga | local_mc_acc |" in md
    before, after = m["lm_eval_local_mc_acc_before"], m["lm_eval_local_mc_acc_after"]
    assert f"{report.fmt_num(before)} → {report.fmt_num(after)} ±" in md
