#!/usr/bin/env bash
# The one prepared device check (device tool, one H100/H200, <= 8 minutes including set-up):
#   1. peft-bench selfcheck: LoRA r16 / IA3 / full FT of llama-1b-shape, 8 x 1024 bf16, harness vs bare loop
#      (step-time ratio >= 0.95; full-FT training peak within 5% of the bare loop's own)         [issue 14]
#   2. suites/gpu-check.yaml with spawn: phase timings per cell (<= 15 s wall), energy per token,
#      estimate vs torch allocation (LoRA / full / QLoRA), inference cost                      [issues 14, 15, 21]
#   3. the same LoRA / IA3 / full cells with the fork server; compare against spawn               [issue 15]
#   4. one suites/shapes.yaml cell per shape (3B, 8B, 7B; random weights from config)             [issue 18]
#   5. suites/gpu-knobs.yaml: LoRA plain vs torch.compile vs eager attention (compile cost, payoff)   [issue 31]
#      and vs a 1-GPU DDP cell through torchrun (the distributed path's own overhead)                [issue 30]
#   6. peft-bench fit --axis seq_len on suites/gpu-fit.yaml under 24 GB: LoRA vs full vs QLoRA         [issue 31]
#   7. scripts/gpu_summary.py: the closing-note tables (+ the knobs report and fit.md)
# Run:   device.run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
#   after: mkdir -p .whl && cp ../shared/device/wheels/{bitsandbytes,datasets,evaluate,pyarrow,dill,multiprocess,xxhash}*.whl .whl/
# The GPU we were lent had a 615 MiB process of another owner on it (invisible by PID): --allow-busy-gpu is passed
# and that memory is recorded. On a CPU (GPU_CHECK_CPU=1) the same steps run on tiny models, to check the script.
set -uo pipefail
OUT=${OUT:-out/device}
WORK=${WORK:-/tmp/gpu-check}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
say() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || python3 -m pip install -q -e . --no-deps
PB="python3 -m bench.cli"
BUSY="--allow-busy-gpu --no-forecast"
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then  # plumbing check on a CPU: tiny shapes, few steps
  SC="--model tiny-llama --precision fp32 --steps 8 --seq-len 64"
  OV="model=tiny-llama seq_len=64 device=cpu precision=fp32 steps=6 warmup_steps=2"
  SHAPES="suites/shapes/roberta-base.json"
else
  SC="" OV="" SHAPES=""
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv > "$OUT/gpu.txt" 2>&1
  nvidia-smi >> "$OUT/gpu.txt" 2>&1
fi
say "1. selfcheck (harness vs bare loop)"
timeout 150 $PB selfcheck --out "$WORK/selfcheck" $SC > "$OUT/selfcheck.log" 2>&1
say "2. cells, spawn"
timeout 120 $PB run suites/gpu-check.yaml --out "$WORK/cells" --launcher spawn $BUSY --force $OV > "$OUT/run.log" 2>&1
say "3. cells, fork server"
timeout 60 $PB run suites/gpu-check.yaml --out "$WORK/cells-fork" --launcher fork-server $BUSY --force \
  --only "*--lora-alpha32-r16--*" --only "*--ia3--*" --only "*--full--*" $OV >> "$OUT/run.log" 2>&1
say "4. shapes"
if [ -z "$SHAPES" ]; then
  timeout 100 $PB run suites/shapes.yaml --out "$WORK/shapes" $BUSY --force --only "*lora-alpha32-r16--bf16--ga1" \
    >> "$OUT/run.log" 2>&1
else
  timeout 130 $PB run suites/shapes.yaml --out "$WORK/shapes" $BUSY --force --only "*roberta*lora*" device=cpu \
    seq_len=64 steps=6 warmup_steps=2 allow_emulated_precision=true >> "$OUT/run.log" 2>&1
fi
say "5. knobs: compile, attention"
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then FITMAX=512 FITSTEP=128 FITLIM=300; else FITMAX=16384 FITSTEP=2048 FITLIM=24000; fi
timeout 130 $PB run suites/gpu-knobs.yaml --out "$WORK/knobs" $BUSY --force $OV >> "$OUT/run.log" 2>&1
$PB report "$WORK/knobs" -o "$OUT/knobs.md" >> "$OUT/run.log" 2>&1
say "6. fit: longest seq_len in ${FITLIM} MiB"
timeout 110 $PB fit suites/gpu-fit.yaml --axis seq_len --min "$FITSTEP" --max "$FITMAX" --step "$FITSTEP" \
  --memory-limit-mib "$FITLIM" --out "$WORK/fit" > "$OUT/fit.md" 2>> "$OUT/run.log"
say "7. summary"
for d in cells cells-fork shapes knobs; do cp "$WORK/$d/results.jsonl" "$OUT/$d.jsonl" 2>/dev/null; done
python3 scripts/gpu_summary.py "$WORK" > "$OUT/summary.md" 2>> "$OUT/run.log"
say "done"
cat "$OUT/summary.md" "$OUT/knobs.md" "$OUT/fit.md" 2>/dev/null
