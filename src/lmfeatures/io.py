"""Atomic outputs and provenance.

Every output is written under a temporary name next to its final path and renamed when complete,
so an interrupted job never leaves something that looks finished. Every results folder gets a
``provenance.json``: git commit, package versions, Python version, seed and the resolved config.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROVENANCE_PACKAGES = (
    "lmfeatures",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "numpy",
    "safetensors",
    "snakemake",
    "matplotlib",
    "seaborn",
    "pandas",
    "pyarrow",
)


@contextlib.contextmanager
def atomic_path(final: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to `final` only if the block succeeds.

    The temporary name starts with '.' and ends in '.partial' so nothing globbing for results
    picks it up. An existing `final` is replaced, and so are the temporaries of a killed writer of
    `final` (one job writes each output).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for left in final.parent.glob(f".{glob.escape(final.name)}.*.partial"):
        shutil.rmtree(left, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    target = tmp if directory else tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Tee:
    """A text stream that writes to several streams (the terminal and a job's log file)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def log_stderr(log_path: str | Path) -> Iterator[None]:
    """Copy stderr (progress bars, warnings, the final error) into a job's log file as well."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log:
        original = sys.stderr
        sys.stderr = _Tee(original, log)
        try:
            yield
        except Exception as err:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            raise
        finally:
            sys.stderr = original


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


LOCK_OWNER = "lmfeatures-lock-owner.json"  # under .snakemake/: the run that took Snakemake's lock


def release_stale_lock(snakemake_dir: str | Path = ".snakemake") -> str | None:
    """Recover from a run that died holding Snakemake's lock (SIGKILL, a lost session), which makes
    every later run stop with "Directory cannot be locked" until `snakemake --unlock`.

    A run records itself (host, pid, process start time) in snakemake_dir/LOCK_OWNER before it
    takes the lock. The lock is stale when that process is gone from this host: then it is removed
    and a line saying so returned. A lock with no record, or taken on another host, is left to
    Snakemake's own message. The caller then becomes the recorded owner, unless a live run holds
    the lock."""
    import psutil

    folder = Path(snakemake_dir)
    locks, record = sorted((folder / "locks").glob("*.lock")), folder / LOCK_OWNER
    released = None
    if locks:
        try:
            owner = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        try:
            alive = psutil.Process(owner["pid"]).create_time() == owner["started"]
        except psutil.NoSuchProcess:
            alive = False
        if owner.get("host") != platform.node() or alive:
            return None
        for lock in locks:
            lock.unlink(missing_ok=True)
        released = f"removed the lock of snakemake run {owner['pid']}, which ended without releasing it (killed)"
    folder.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    record.write_text(json.dumps({"host": platform.node(), "pid": me.pid, "started": me.create_time()}))
    return released


class ResultsTreeError(RuntimeError):
    """A file stands where the workflow writes a folder."""


def check_folders(folders) -> None:
    """Each of `folders`, and each folder above it, is a folder where it exists: a file in its place
    stops the run before any job, with one line, rather than mid-run inside Snakemake."""
    for folder in folders:
        for path in (Path(folder), *Path(folder).parents):
            if path.exists() and not path.is_dir():
                raise ResultsTreeError(
                    f"{path} is a file, where the workflow writes a folder: move or delete it, then rerun"
                )


class DamagedFileError(RuntimeError):
    """A results file exists but cannot be read (truncated, overwritten); the message names it and
    the folder to rebuild."""


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn a parse error of `path` into a DamagedFileError that names it and says how to rebuild
    the results folder holding it (the output of one job)."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, _arrow_invalid()) as err:
        folder = Path(path).parent
        raise DamagedFileError(
            f"{path} is damaged ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else '?'}): delete "
            f"{folder} and rebuild it with `snakemake --cores 2 {folder}`, then rerun your command"
        ) from None


def _arrow_invalid() -> type[Exception]:
    from pyarrow import ArrowInvalid

    return ArrowInvalid


def read_json(path: str | Path) -> Any:
    with reading(path):
        return json.loads(Path(path).read_text())


def read_safetensors(path: str | Path) -> dict:
    """The tensors of a .safetensors file (DamagedFileError if it cannot be read)."""
    from safetensors.torch import load_file

    with reading(path):
        return load_file(str(path))


def read_parquet(path: str | Path, **kwargs):
    """A parquet file as a DataFrame (DamagedFileError if it cannot be read)."""
    import pandas as pd

    with reading(path):
        return pd.read_parquet(path, **kwargs)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config: dict | None, seed: int | None = None, **extra: Any) -> dict:
    return {
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "seed": seed,
        **extra,
        "config": config,
    }


def write_provenance(folder: str | Path, config: dict | None, seed: int | None = None, **extra: Any) -> None:
    write_json(Path(folder) / "provenance.json", provenance(config, seed, **extra))


PACKAGE_ROOT = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The source file of lmfeatures module `name` ('lmfeatures.scan.scan'), or None if it is not one."""
    parts = name.split(".")
    if parts[0] != PACKAGE_ROOT.name:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache  # a parse of the workflow hashes every stage; they share most modules
def _imported_modules(name: str, path: Path) -> frozenset[str]:
    """Names of the lmfeatures modules that the file of module `name` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from . import scan` imports a module
    return frozenset(m for m in found if _module_file(m) is not None)


def imports_of(module: str) -> set[str]:
    """`module`, its parent packages and every lmfeatures module it imports, directly or not."""
    if _module_file(module) is None:
        raise ValueError(f"{module!r} is not a module of the {PACKAGE_ROOT.name} package")
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}  # their __init__ runs first
        todo.extend((_imported_modules(name, _module_file(name)) | parents) - seen)
    return seen


def code_version(module: str) -> str:
    """A hash of the source of imports_of(`module`).

    Rules pass it as a param, so that Snakemake reruns a rule whose code changed and a rebuilt
    report never mixes outputs of old and new code.
    """
    digest = hashlib.sha256()
    for name in sorted(imports_of(module)):
        digest.update(name.encode() + b"\0" + _module_file(name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
