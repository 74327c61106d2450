#!/usr/bin/env bash
# The runs behind experiments/README.md's tables: paper.yaml, then epsilon.yaml (which reuses
# paper's epsilon 8 and inf cells). Resumable: run it again and finished cells are skipped.
set -u
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
nice -n 5 .venv/bin/crosslm sweep experiments/sweeps/paper.yaml --no-progress
nice -n 5 .venv/bin/crosslm sweep experiments/sweeps/epsilon.yaml --no-progress
