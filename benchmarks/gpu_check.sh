#!/usr/bin/env bash
# Everything that needs the GPU, in one call of under 10 minutes, on the lent machine:
#   here:   bash benchmarks/fetch_gpu_wheels.sh
#   device: run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/wheels", "samples/model"], timeout_s=590)
# Prints a short table last; full logs and JSON land in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/streamseg-gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# PyAV goes to its own folder (the system Python may be read-only or externally managed there).
if ! python3 -c "import av" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    benchmarks/wheels/av-*.whl || { echo "PyAV wheel did not install"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'av', av.__version__)" | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/versions.txt"

timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_equivalence.py tests/test_color.py \
  > "$OUT/tests.txt" 2>&1
echo "tests: $(tail -1 "$OUT/tests.txt")"

bench() {  # name, seconds allowed, then bench.py arguments
  local name=$1; shift
  local limit=$1; shift
  timeout "$limit" python3 benchmarks/bench.py --device cuda --json "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1 \
    || echo "$name: stopped (exit $?); the rounds it finished:"
  grep -E "^round |^run |^ceiling |^streamseg|^naive |^  decode|^busy|^  ceiling|^  streamseg" "$OUT/$name.txt" | tail -17
}
bench swin-tiny-720p-fp16 250 --model swin-tiny --size 1280x720 --task panoptic --batch-size 8 --frames 240 --rounds 2 --naive-frames 30
# The same with YUV <-> RGB done by FFmpeg on the host instead of on the GPU: what the device conversion buys.
bench swin-tiny-720p-fp16-host-colors 70 --model swin-tiny --size 1280x720 --task panoptic --batch-size 8 --frames 240 \
  --skip-naive --rounds 1 --color-conversion host
bench swin-tiny-720p-fp16-profile 80 --model swin-tiny --size 1280x720 --task panoptic --batch-size 8 --frames 96 \
  --profile --skip-naive --rounds 1
