"""The README's commands with a distribution's own python3, which refuses `pip install` (PEP 668):
scripts/setup.sh creates .venv, and .venv/bin/snakemake runs the test config end to end.

A system test (conftest.py): it installs every dependency into a fresh virtual environment."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_runs import REPO

pytestmark = [pytest.mark.system, pytest.mark.e2e]
DISTRIBUTION_PYTHON = Path("/usr/bin/python3")
EXTERNALLY_MANAGED = (
    "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path('stdlib'), "
    "'EXTERNALLY-MANAGED')))"
)


def checkout_copy(target: Path) -> None:
    """The repository's files as a clean clone would have them, uncommitted edits included."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)


def test_readme_commands_work_with_the_distributions_python(tmp_path):
    if not DISTRIBUTION_PYTHON.exists() or subprocess.run([DISTRIBUTION_PYTHON, "-c", EXTERNALLY_MANAGED]).returncode:
        pytest.skip(f"{DISTRIBUTION_PYTHON} is not an externally managed (PEP 668) Python here")
    repo = tmp_path / "repo"
    checkout_copy(repo)
    # python3 is the distribution's: no pyenv shims, no active environment, no copy of this package on the path
    path = [
        p for p in os.environ["PATH"].split(os.pathsep) if ".pyenv" not in p and Path(sys.prefix) not in Path(p).parents
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(DISTRIBUTION_PYTHON.parent), *path])

    def run(*cmd: str, timeout: int) -> str:
        result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    assert "managed by the system (PEP 668); creating .venv" in run("bash", "scripts/setup.sh", timeout=900)
    assert (repo / ".venv").is_dir() and not (repo / ".venv").is_symlink()
    run(".venv/bin/python3", "tests/micro.py", "qwen3", "local-models/qwen3-micro", timeout=120)
    run(".venv/bin/snakemake", "--cores", "2", "--configfile", "config/test.yaml", timeout=900)
    assert (repo / "results" / "report" / "index.html").stat().st_size > 0
