"""Text corpora: the embedded offline default and any `datasets.load_dataset` source.

The embedded default, ``python-stdlib``, is the non-test ``.py`` files of the running
interpreter's standard library: every machine with Python has it, so the whole pipeline runs
offline. One document per file; documents are split into train / held-out by a hash of their
relative path, so the split does not depend on file order or on which other files exist.

The result is a ``datasets.DatasetDict`` with splits ``train`` and ``heldout`` and columns
``doc_id`` (stable string id) and ``text``.
"""

from __future__ import annotations

import glob
import hashlib
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

EMBEDDED_SOURCE = "python-stdlib"
# Test code is excluded: it is repetitive boilerplate that would dominate the top examples.
_TEST_PATH = re.compile(r"(^|/)(tests?|idle_test)/|(^|/)test_[^/]*\.py$")


class CorpusError(ValueError):
    """The corpus could not be built; the message says what to change."""


@dataclass
class CorpusConfig:
    source: str = EMBEDDED_SOURCE  # "python-stdlib", a hub dataset id, or a loader name ("text", "json", "parquet")
    name: str | None = None  # dataset configuration name (load_dataset's `name`)
    split: str = "train"  # which split of the source to read; we make our own train / held-out split
    text_column: str = "text"
    data_files: list[str] | None = None  # local files for the "text" / "json" / "parquet" loaders
    heldout_fraction: float = 0.1
    max_documents: int | None = None  # keep only the first N documents (sorted by id): small test corpora
    max_chars_per_document: int | None = None
    min_chars: int = 1  # drop documents shorter than this (empty files, blank lines of text sources)
    encoding: str = "utf-8"  # of the data_files of the "text" and "json" loaders
    extra: dict[str, Any] = field(default_factory=dict)


def heldout_by_hash(doc_id: str, fraction: float) -> bool:
    """Deterministic split: the first 8 bytes of sha256(doc_id) as a number in [0, 1)."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def stdlib_files() -> tuple[Path, list[Path]]:
    """The non-test .py files of this interpreter's standard library, sorted by relative path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("site-packages/") or rel.startswith("dist-packages/") or _TEST_PATH.search(rel):
            continue
        files.append(path)
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _stdlib_documents() -> tuple[list[dict], dict]:
    root, files = stdlib_files()
    docs = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append({"doc_id": path.relative_to(root).as_posix(), "text": text})
    info = {"python_version": sys.version.split()[0], "stdlib_root": str(root)}
    return docs, info


TEXT_LOADERS = ("text", "json")  # the datasets loaders that decode their files (and take `encoding`)


def _check_encoding(paths: list[str], encoding: str) -> None:
    """Every file decodes with `encoding`; else a CorpusError naming the file, the byte and the key."""
    for path in paths:
        try:
            Path(path).read_bytes().decode(encoding)
        except UnicodeDecodeError as err:
            raise CorpusError(
                f"corpus.data_files: {path} is not {encoding}: byte 0x{err.object[err.start]:02x} at position "
                f"{err.start} cannot be decoded; convert the file, or set corpus.encoding to its encoding "
                "(e.g. latin-1, cp1252)"
            ) from None


def _loaded_documents(cfg: CorpusConfig) -> tuple[list[dict], dict]:
    kwargs = dict(cfg.extra)
    if cfg.data_files:
        kwargs["data_files"] = cfg.data_files
        missing = [f for f in cfg.data_files if not glob.glob(f)]  # a path or a glob pattern
        if missing:
            raise CorpusError(f"corpus.data_files: {missing[0]!r} does not exist; give existing local files")
        if all(Path(f).is_file() and Path(f).stat().st_size == 0 for f in cfg.data_files):
            raise CorpusError(
                f"corpus source {cfg.source!r}: corpus.data_files {cfg.data_files} are empty, so there is no "
                "document to train or scan on; give files with rows of text"
            )
    if cfg.data_files and cfg.source in TEXT_LOADERS:
        _check_encoding([p for f in cfg.data_files for p in sorted(glob.glob(f))], cfg.encoding)
        kwargs["encoding"] = cfg.encoding
    try:
        ds = datasets.load_dataset(cfg.source, cfg.name, split=cfg.split, **kwargs)
    except Exception as err:  # datasets raises many types; all mean "could not load"
        reason = (str(err).splitlines() or [""])[0][:200]
        raise CorpusError(
            f"corpus source {cfg.source!r} could not be loaded ({type(err).__name__}: {reason}); "
            "give local files with corpus.source: text|json|parquet and corpus.data_files, "
            f"or use the offline default corpus.source: {EMBEDDED_SOURCE}"
        ) from err
    if cfg.text_column not in ds.column_names:
        raise CorpusError(
            f"corpus source {cfg.source!r} has no column {cfg.text_column!r} (columns: {ds.column_names}); "
            "set corpus.text_column"
        )
    docs = [{"doc_id": f"{cfg.split}/{i}", "text": t} for i, t in enumerate(ds[cfg.text_column])]
    return docs, {"source_fingerprint": getattr(ds, "_fingerprint", None)}


def build_corpus(cfg: CorpusConfig) -> tuple[datasets.DatasetDict, dict]:
    """Read the source, filter, and split into train / held-out.

    Returns the DatasetDict and a provenance dict (document counts, characters, content hash).
    """
    docs, info = _stdlib_documents() if cfg.source == EMBEDDED_SOURCE else _loaded_documents(cfg)
    docs = [d for d in docs if d["text"] is not None and len(d["text"]) >= cfg.min_chars]
    if cfg.max_documents is not None:
        docs = docs[: cfg.max_documents]
    if cfg.max_chars_per_document is not None:
        docs = [{**d, "text": d["text"][: cfg.max_chars_per_document]} for d in docs]
    if not docs:
        raise CorpusError(
            f"corpus source {cfg.source!r} yielded no documents of at least {cfg.min_chars} characters; "
            "check corpus.source / corpus.split / corpus.text_column"
        )
    content_hash = hashlib.sha256()
    for d in docs:
        content_hash.update(d["doc_id"].encode() + b"\0" + d["text"].encode("utf-8", "replace") + b"\0")

    is_heldout = [heldout_by_hash(d["doc_id"], cfg.heldout_fraction) for d in docs]
    train = [d for d, h in zip(docs, is_heldout) if not h]
    heldout = [d for d, h in zip(docs, is_heldout) if h]
    if not train or not heldout:
        raise CorpusError(
            f"corpus of {len(docs)} documents gives an empty {'train' if not train else 'held-out'} split "
            f"with corpus.heldout_fraction={cfg.heldout_fraction}; use more documents or another fraction"
        )
    features = datasets.Features({"doc_id": datasets.Value("string"), "text": datasets.Value("string")})
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(train, features=features),
            "heldout": datasets.Dataset.from_list(heldout, features=features),
        }
    )
    info.update(
        {
            "source": cfg.source,
            "documents": {"train": len(train), "heldout": len(heldout)},
            "characters": {
                "train": sum(len(d["text"]) for d in train),
                "heldout": sum(len(d["text"]) for d in heldout),
            },
            "content_sha256": content_hash.hexdigest(),
        }
    )
    return dd, info
