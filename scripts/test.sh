#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite (about 5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# OpenBLAS threads spin after each BLAS call and slow the numba kernel that runs next.
export OPENBLAS_THREAD_TIMEOUT="${OPENBLAS_THREAD_TIMEOUT:-1}"
exec .venv/bin/python -m pytest "$@"
