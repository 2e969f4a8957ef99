#!/usr/bin/env bash
# One prepared device check (device tool): install the carried wheels, install peft-bench (entry points need
# its metadata), run suites/gpu-check.yaml and the self-check, leave records, report and logs under $OUT.
#   carry: [".whl"]   (cp ../shared/device/wheels/{bitsandbytes,datasets,evaluate,pyarrow,dill,multiprocess,xxhash}*.whl .whl/)
#   command: bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 420 python3 -m bench.cli run suites/gpu-check.yaml --out "$OUT/gpu-check" 2>&1 | tee "$OUT/run.log"
python3 -m bench.cli report "$OUT/gpu-check" -o "$OUT/gpu-check.md" --csv "$OUT/gpu-check.csv"
timeout 120 python3 -m bench.cli selfcheck --out "$OUT/selfcheck" 2>&1 | tee "$OUT/selfcheck.log"
cp "$OUT/gpu-check/results.jsonl" "$OUT/results.jsonl" 2>/dev/null
