#!/usr/bin/env bash
# Sets up .venv, runs the linters and the whole test suite (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# OpenBLAS threads spin after each BLAS call and slow the numba kernel that runs next.
export OPENBLAS_THREAD_TIMEOUT="${OPENBLAS_THREAD_TIMEOUT:-1}"
.venv/bin/ruff check multivec tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
