#!/usr/bin/env bash
# The README's test command: install, lint (Python, Snakemake files, the workflow), run the test suite
# (end-to-end run included).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=dev,saelens,cluster bash scripts/setup.sh  # SAELens: the test that it loads our SAE files; cluster: the SLURM test
ruff check .
ruff format --check .
snakefmt --check .
snakemake --lint
python3 -m pytest -q
