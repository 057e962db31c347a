"""Rules of workflow/rules/scans.smk: dataset max-activation scans and the report's "Dataset examples"
pieces."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from ..corpus import load_corpus
from ..hooks import HookedModel
from ..io import atomic_path, write_json, write_provenance
from ..models import load_model, resolve_device
from ..report.dataset_examples import concentration_table, distribution_figure, gallery
from ..scan import ScanConfig, ScanError, Windows, load_scan, make_windows, scan_meta
from ..scan import scan as run_scan
from ..tokenizer import load_tokenizer


def write_scan(
    out_dir: str | Path, result: dict, windows: Windows, meta: dict, window_max: dict[str, np.ndarray]
) -> None:
    """The folder load_scan reads: scan.safetensors, windows.safetensors, meta.json, {hook}.winmax.npy."""
    with atomic_path(out_dir, directory=True) as tmp:
        save_file({k: v.contiguous() for k, v in result.items()}, str(tmp / "scan.safetensors"))
        ws = {"doc": windows.doc, "start": windows.start, "valid_from": windows.valid_from, "ids": windows.ids}
        save_file(ws, str(tmp / "windows.safetensors"))
        for hook, table in window_max.items():
            np.save(tmp / f"{hook}.winmax.npy", table)
        write_json(tmp / "meta.json", {**meta, "n_tokens": int(result["n_tokens"])})


def scan(
    *, model_dir: str, corpus_dir: str, out_dir: str, model: str, scan: dict, config: dict, seed: int, device: str
) -> None:
    """Tokenize the held-out split with the model's own tokenizer, scan every layer, write atomically."""
    cfg = ScanConfig(**scan, seed=seed)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    heldout = load_corpus(corpus_dir)["heldout"]
    docs = tok(list(heldout["text"]), add_special_tokens=False)["input_ids"]
    try:
        windows = make_windows(docs, cfg.context_length, cfg.max_tokens)
    except ScanError as err:  # say which corpus: the fix is in its config or its files
        raise ScanError(f"corpus {config.get('corpus', {}).get('source')!r}, held-out split: {err}") from None
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scan-tables-", dir=Path(out_dir).parent) as tables:
        table_dir = Path(tables)

        def on_disk(hook: str, shape: tuple[int, int]) -> np.ndarray:  # RAM stays bounded on large corpora
            return np.lib.format.open_memmap(table_dir / f"{hook}.winmax.npy", "w+", np.float16, shape)

        result, window_max = run_scan(hooked, windows, cfg, on_disk, desc=f"scan {model}")
        meta = scan_meta(model, model_dir, hooked, cfg, windows, list(heldout["doc_id"]))
        write_scan(out_dir, result, windows, meta, window_max)
    write_provenance(out_dir, config, seed, model=model, n_tokens=int(result["n_tokens"]))


def scan_summary(
    *,
    scans: list[str],
    pages: list[str],
    models: list[str],
    names: list[str],
    kinds: dict[str, str],
    distributions: str,
    table: str,
    gallery_md: str,
) -> None:
    """The report's "Dataset examples" pieces; the table and gallery show the trained models (all, if none)."""
    loaded = {name: load_scan(path) for name, path in zip(names, scans)}
    trained = [n for n in names if kinds[n] == "trained"] or names
    selections = {n: json.loads((Path(p) / "selection.json").read_text()) for n, p in zip(names, pages) if n in trained}
    tokenizers = {n: load_tokenizer(m) for n, m in zip(names, models) if n in trained}
    distribution_figure(loaded, kinds, distributions)
    concentration_table(selections, table)
    gallery(selections, loaded, tokenizers, names, gallery_md)
