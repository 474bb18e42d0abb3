#!/usr/bin/env bash
# The GPU check, one command: precision (bf16 against fp32) and throughput of the
# full BYOL step against the bare encoder, for ResNet-18 at 32 px and ResNet-50 at 224 px.
# Under 5 minutes on one H100/H200; without CUDA (or with --smoke) a toy-size smoke test.
#   benchmarks/gpu_check.sh [--smoke] [--compile] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
exec "$PY" benchmarks/gpu_check.py "$@"
