#!/usr/bin/env bash
# The main job on a fresh machine: set up, index SciFact abstracts into the embedded default
# database (LanceDB in ./data), then answer a few queries with per-stage timings.
# Uses the offline MiniLM model in ../shared/models unless MULTIVEC_MODEL_DIR names another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CORPUS="${CORPUS:-../shared/data/scifact/corpus.jsonl}"
LIMIT="${LIMIT:-1000}"
.venv/bin/multivec -v index "$CORPUS" --into lancedb://./data --collection scifact --limit "$LIMIT"
.venv/bin/multivec -v search --uri lancedb://./data --collection scifact -k 5 \
  "Vitamin D deficiency is associated with multiple sclerosis." \
  "Statins reduce the risk of cardiovascular events." \
  "Antibiotics are effective against viral infections."
.venv/bin/multivec info lancedb://./data --collection scifact
