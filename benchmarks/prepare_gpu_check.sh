#!/usr/bin/env bash
# Prepare here what the GPU check needs and the lent machine cannot fetch (it has no network), in two
# ignored folders that the device call carries:
#   benchmarks/wheels    PyAV for that machine's Python 3.12, and py-spy (for the interpreter lock's holders);
#   benchmarks/baseline  the package as of BASE (default 5469be0: the code the last GPU check measured,
#                        in the fourteenth session), which the check runs beside this tree's
#                        (bench.py --baseline) to measure what changed since, side by side.
# usage: bash benchmarks/prepare_gpu_check.sh [BASE]
set -euo pipefail
cd "$(dirname "$0")"
BASE=${1:-5469be0}
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d wheels "av==$(python -c 'import av; print(av.__version__)')"
pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 -d wheels py-spy
ls -la wheels
rm -rf baseline
mkdir baseline
git -C .. archive "$BASE" streamseg | tar -x -C baseline
echo "baseline: $(git log -1 --format='%h %s' "$BASE" | cut -c1-100)"
# Each step's arguments, as that machine will expand them, checked here (a refused one would cost the run).
cd .. && ARGS_ONLY=1 OUT=$(mktemp -d) bash benchmarks/gpu_check.sh
