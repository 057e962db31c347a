#!/usr/bin/env bash
# Install the package and its pinned dependencies, and make .venv/bin hold its tools (the README's
# commands call .venv/bin/snakemake):
#   - in an environment you activated (venv, conda), or with a Python that pip may install into
#     (pyenv, a python.org build): install there, and link .venv to it;
#   - with a distribution's own python3, which refuses pip (PEP 668, "externally-managed-environment",
#     Debian 12+, Ubuntu 23.04+): create the virtual environment .venv and install into it.
# torch==2.13.0 is pinned (requirements.lock): an open range would pull several GB of CUDA packages.
# EXTRAS picks the optional dependency groups (default: dev; scripts/test.sh adds saelens and cluster).
# PYTHON picks the interpreter (default: python3 on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

externally_managed() {
    "$1" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'
}

if [ -d .venv ] && [ ! -L .venv ]; then
    : # the virtual environment of an earlier run of this script
elif [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || ! externally_managed "$python"; then
    ln -sfn "$("$python" -c 'import sys; print(sys.prefix)')" .venv
else
    echo "setup: $("$python" -c 'import sys; print(sys.executable)') is managed by the system (PEP 668); creating .venv"
    if ! "$python" -m venv .venv; then
        rm -rf .venv
        echo "setup: '$python -m venv' failed; on Debian / Ubuntu install it with 'apt-get install python3-venv', then rerun" >&2
        exit 1
    fi
fi
.venv/bin/python3 -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[${EXTRAS:-dev}]"
echo "setup: installed into $(.venv/bin/python3 -c 'import sys; print(sys.prefix)'); its tools are in .venv/bin"
