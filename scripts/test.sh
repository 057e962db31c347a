#!/usr/bin/env bash
# The README's test command: install, lint (Python, Snakemake files, the workflow), run the test suite
# (end-to-end run included).
# The cluster test (a one-node SLURM, apt-installed and started as root) and the setup test (a fresh
# .venv from the distribution's own python3) run where CI is set or LMFEATURES_SYSTEM_TESTS=1;
# elsewhere they are skipped with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=dev,saelens,cluster bash scripts/setup.sh  # SAELens: the test that it loads our SAE files; cluster: the SLURM test
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
snakefmt --check .
snakemake --lint
python3 -m pytest -q
