#!/usr/bin/env bash
# Everything that needs the GPU, in one call of under ten minutes on the lent machine:
#   here:   bash benchmarks/prepare_gpu_check.sh
#   device: run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/wheels", "benchmarks/baseline"],
#               timeout_s=600)
# Steps run most telling first, each under its own time limit; the limits of the steps a run can take add
# up to BUDGET seconds at most (ARGS_ONLY=1 checks it), so one that hangs cannot take the others' time
# and what was measured comes back. The sample-model bench runs the
# package as of benchmarks/baseline beside this tree's (bench.py --baseline), when that folder is there. Files in $OUT
# (at most 8 come back): env.txt, tests.txt, bench.txt, and json.tar with each bench's JSON.
# ARGS_ONLY=1 bash benchmarks/gpu_check.sh: here, in seconds, only hands each bench step's arguments, as
# bash expands them, to bench.py --check-args, on every branch (tests/test_gpu_check.py does).
set -uo pipefail
ARGS_ONLY=${ARGS_ONLY:-}
refused=0
OUT=${OUT:-/tmp/streamseg-gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# PyAV goes to its own folder (the system Python may be read-only or externally managed there).
if ! python3 -c "import av" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    benchmarks/wheels/av-*.whl || { echo "PyAV wheel did not install"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
# py-spy, for the step that samples who holds the interpreter lock (a binary; bench.py finds it on the PATH).
if ! command -v py-spy >/dev/null && ls benchmarks/wheels/py_spy-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/spy benchmarks/wheels/py_spy-*.whl \
    && export PATH=$PATH:/tmp/spy/bin
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "$ARGS_ONLY" ]; then
{
  python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'av', av.__version__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
  nproc
  # What the hardware paths find here, said before any test needs them.
  timeout 40 python3 - <<'EOF'
import av, logging
logging.basicConfig(level=logging.INFO)
from streamseg.sources.hardware import hardware_decoder, _probe
from streamseg.sinks.video import encoder_opens
print("nvdec probe:", _probe(None) or "opens")
print("hardware_decoder('cuda'):", hardware_decoder("cuda"))
print("h264_nvenc opens:", encoder_opens("h264_nvenc"), "| hevc_nvenc opens:", encoder_opens("hevc_nvenc"))
EOF
} 2>&1 | tee "$OUT/env.txt"

PER_TEST=$(python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout 90")  # the plugin is there
timeout 120 python3 -m pytest -q -rfE -p no:cacheprovider $PER_TEST \
  tests/test_cuda.py tests/test_graphs.py tests/test_color.py > "$OUT/tests.txt" 2>&1
echo "tests: $(tail -1 "$OUT/tests.txt")"
grep -h "CUDA graphs unavailable" "$OUT/tests.txt" | head -3
fi

BENCH="$OUT/bench.txt"
BUDGET=${BUDGET:-540}  # seconds for the whole script, leaving the call's limit time to send $OUT back
SETUP=160  # the environment's probes (40) and the tests (120), before the benches
planned=$SETUP
mkdir -p /tmp/gpu-json
BASELINE=""
[ -d benchmarks/baseline/streamseg ] && BASELINE="--baseline benchmarks/baseline"
bench() {  # name, seconds allowed, then bench.py arguments; returns bench.py's exit status
  local name=$1; shift
  local limit=$1; shift
  planned=$((planned + limit))
  if [ -n "$ARGS_ONLY" ]; then
    if python3 benchmarks/bench.py file --check-args --device cuda "$@" > "$OUT/args-$name.txt" 2>&1; then
      echo "$name: arguments taken"
    else
      echo "$name: arguments refused: $(tail -1 "$OUT/args-$name.txt")"; refused=1
    fi
    return 0
  fi
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 30 ]; then echo "$name: skipped, the budget is spent"; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name: $*" >> "$BENCH"
  timeout "$limit" python3 benchmarks/bench.py file --device cuda --cache /tmp/bench-cache --json "/tmp/gpu-json/$name.json" "$@" \
    > /tmp/bench-$name.txt 2>&1
  local rc=$?
  cat /tmp/bench-$name.txt >> "$BENCH"
  tar -cf "$OUT/json.tar" -C /tmp/gpu-json .
  [ $rc -eq 0 ] || echo "$name: stopped (exit $rc); the rounds it finished:"
  grep -E "^round |^run |^ceiling |^streamseg|^variant|^baseline|^naive |^  decode|^busy|^interpreter|^  ceiling|^  streamseg|^  variant|^  baseline|failed|^who |^  lock|^    " \
    /tmp/bench-$name.txt | tail -40
  return $rc
}
# swin-tiny with about 20 confident queries planted in its random class head, so that its frames have real
# segments (the JSON says how many a frame) and post-processing, drawing and the export cost what they do.
SWIN="--model swin-tiny --plant 20 --size 1280x720 --task panoptic --frames 480"
# The issue's measurement, with NVDEC's frames kept on the GPU as a variant in each round, and the code
# the last check measured (benchmarks/baseline), side by side.
bench main 200 $SWIN --batch-size 8 --rounds 2 --naive-frames 30 --variant=--gpu-frames $BASELINE
main=$?
if [ $main -eq 0 ]; then
  # Who holds the interpreter lock while the pipeline runs (py-spy), over a run long enough to sample.
  bench gil 60 $SWIN --frames 1200 --batch-size 8 --skip-naive --skip-ceiling --rounds 1 --gil-profile
  # The CPU's decoder side by side with NVDEC.
  bench cpu-decoder 60 $SWIN --batch-size 8 --skip-naive --skip-ceiling --rounds 1 "--variant=--decoder cpu"
  # The trained sample model, whose segments are real, against the code the last check measured: its tiny
  # forward pass leaves the host's work (launches, the lock) to bind.
  bench segments 60 --model sample --size 1280x720 --task panoptic --frames 480 --batch-size 8 --skip-naive \
    --rounds 1 $BASELINE
fi
if [ $main -ne 0 ] || [ -n "$ARGS_ONLY" ]; then
  # Something on the hardware path failed: the same run on the plain path says whether it is that.
  [ -n "$ARGS_ONLY" ] && ok_path=$planned && planned=$((SETUP + 200))
  bench fallback 90 $SWIN --batch-size 8 --skip-naive --rounds 1 --decoder cpu --color-conversion host --no-cuda-graphs
  bench no-graphs 90 $SWIN --batch-size 8 --skip-naive --rounds 1 --no-cuda-graphs
  [ -n "$ARGS_ONLY" ] && [ "$ok_path" -gt "$planned" ] && planned=$ok_path
fi
if [ -n "$ARGS_ONLY" ]; then
  echo "time limits: at most ${planned}s of a ${BUDGET}s budget"
  [ "$planned" -le "$BUDGET" ] || { echo "the steps' limits exceed the budget"; refused=1; }
fi
[ -n "$ARGS_ONLY" ] && exit $refused
grep -h "CUDA graphs unavailable" "$BENCH" | sort | uniq -c | head -3
echo "gpu_check: ${SECONDS}s"
