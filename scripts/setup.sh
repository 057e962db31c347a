#!/usr/bin/env bash
# Install the package and its pinned dependencies into the current Python environment.
# torch==2.13.0 is pinned (requirements.lock): an open range would pull several GB of CUDA packages.
# EXTRAS picks the optional dependency groups (default: dev; scripts/test.sh adds saelens).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[${EXTRAS:-dev}]"
