"""Regenerate the example data files of suites/own-data.yaml (seeded: the same bytes every time).

    python examples/data/make.py

tickets-{train,eval}.csv  made-up support tickets and their queue (text-cls)
copy.jsonl                 "copy : a b c =" -> "a b c" (sft)
notes.txt                  short made-up sentences, one per line (lm-text)
lm_eval/                   a multiple-choice lm-eval task over lm_eval/items.jsonl (lm_eval include_path)
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
QUEUES = {
    "billing": ["I was charged twice for the {thing}", "refund for the {thing} please",
                "my invoice for the {thing} is wrong", "why did the price of the {thing} go up",
                "cancel the payment for the {thing}"],
    "shipping": ["my {thing} has not arrived", "where is the parcel with my {thing}", "the {thing} came damaged",
                 "tracking for the {thing} shows nothing", "the courier lost my {thing}"],
    "account": ["I cannot log in to see my {thing}", "reset my password, the {thing} page locks me out",
                "change the email on the account for my {thing}", "delete my account and the {thing} data",
                "two factor code for the {thing} never comes"],
    "technical": ["the app crashes when I open the {thing} page", "the {thing} page shows an error 500",
                  "sync of my {thing} is broken", "the {thing} screen is blank after the update",
                  "the {thing} page is very slow since yesterday"],
}  # fmt: skip
THINGS = "blue kettle|order 4471|annual plan|headphones|garden chair|subscription|desk lamp"
WORDS = "red blue green cat dog sun moon tree fish bird".split()


def tickets(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    things = THINGS.split("|")
    rows = []
    for _ in range(n):
        queue = rng.choice(sorted(QUEUES))
        text = rng.choice(QUEUES[queue]).format(thing=rng.choice(things))
        rows.append((text + rng.choice(["", ".", "!", " thanks", " asap"]), queue))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "queue"])
        writer.writerows(rows)


def main() -> None:
    write_csv(HERE / "tickets-train.csv", tickets(1, 400))
    write_csv(HERE / "tickets-eval.csv", tickets(2, 100))
    rng = random.Random(3)
    copies = []
    for _ in range(400):
        words = " ".join(rng.choice(WORDS) for _ in range(3))
        copies.append(json.dumps({"prompt": f"copy : {words} =", "completion": words}))
    (HERE / "copy.jsonl").write_text("\n".join(copies) + "\n")
    lines = [f"the {a} {b} sat near the {c} {d}" for a, b, c, d in (rng.sample(WORDS, 4) for _ in range(300))]
    (HERE / "notes.txt").write_text("\n".join(lines) + "\n")
    items = []
    for _ in range(40):
        choices = rng.sample(WORDS, 4)
        items.append(json.dumps({"question": f"which comes first : {' '.join(choices)} ?", "choices": choices,
                                 "answer": 0}))  # fmt: skip
    (HERE / "lm_eval" / "items.jsonl").write_text("\n".join(items) + "\n")


if __name__ == "__main__":
    main()
