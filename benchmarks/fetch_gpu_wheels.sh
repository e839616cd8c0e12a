#!/usr/bin/env bash
# Download here what the lent GPU machine lacks (it has no network): PyAV for its Python 3.12.
# The wheels stay out of git (benchmarks/wheels is ignored); name the folder in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")"
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d wheels "av==$(python -c 'import av; print(av.__version__)')"
ls -la wheels
