"""Rules of workflow/rules/scans.smk: dataset max-activation scans, neuron pages, the report's
"Dataset examples" pieces."""

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
from ..neurons import Neuron, NeuronSpec, direct_logit_effect, resolve_neurons, token_activations, token_concentration
from ..report.dataset_examples import concentration_table, distribution_figure, gallery
from ..report.pages import dataset_page, index_page, page_name
from ..scan import Scan, ScanConfig, ScanError, Windows, load_scan, make_windows, scan_meta
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


def _selections(scan: Scan, spec: NeuronSpec, partner: dict | None) -> tuple[list[Neuron], set[Neuron]]:
    """(this model's pages, the partner's pages): a twin pages every neuron its trained model pages,
    so the links between the two resolve."""
    if partner is None:
        return resolve_neurons(scan, spec), set()
    if partner["role"] == "twin":  # we are the trained model
        chosen = resolve_neurons(scan, spec)
        return chosen, set(resolve_neurons(load_scan(partner["scan"]), spec, extra=chosen))
    trained = resolve_neurons(load_scan(partner["scan"]), spec)  # we are the twin
    return resolve_neurons(scan, spec, extra=trained), set(trained)


def neuron_pages(
    *,
    model_dir: str,
    scan_dir: str,
    out_dir: str,
    model: str,
    selection: dict,
    partner: dict | None,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """One page per selected neuron and an index. `partner` = {"name", "scan", "role"} of the untrained
    twin (role "twin") or of the trained model (role "trained")."""
    scan = load_scan(scan_dir, model_dir=model_dir)
    chosen, partner_chosen = _selections(scan, NeuronSpec(**selection, seed=seed), partner)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    # every window any page shows, one forward per batch up to the deepest selected layer
    windows: dict[Neuron, list[int]] = {}
    for n in chosen:
        shown = scan.tensor(n.hook, "top_window")[:, n.index].tolist()
        shown += scan.tensor(n.hook, "interval_window")[:, :, n.index].flatten().tolist()
        windows[n] = sorted({w for w in shown if w >= 0} | set(scan.random_windows.tolist()))
    needed = sorted({w for ws in windows.values() for w in ws})
    row_of = {w: i for i, w in enumerate(needed)}
    acts = token_activations(hooked, scan.windows.ids[needed], list(chosen))
    chosen_set = set(chosen)
    pages, rows = {}, []
    concentration = {h: token_concentration(scan, h) for h in {n.hook for n in chosen}}  # once per layer
    for i, n in enumerate(chosen):
        share, mode = concentration[n.hook]
        same = []
        for layer in range(scan.meta["n_layers"]):
            unit_max = scan.tensor(f"mlp.{layer}", "max")
            other = Neuron(layer, n.index)
            mx = float(unit_max[n.index]) if n.index < unit_max.numel() else float("nan")
            same.append((layer, mx, page_name(other) if other in chosen_set else None))
        twin = None
        if partner is not None:
            twin = (partner["name"], f"../{partner['name']}/{page_name(n)}" if n in partner_chosen else None)
        nav = {
            "prev": page_name(chosen[i - 1]) if i > 0 else None,
            "next": page_name(chosen[i + 1]) if i + 1 < len(chosen) else None,
        }
        token_acts = {w: acts[n][row_of[w]] for w in windows[n]}
        page = dataset_page(model, n, scan, tok, token_acts, direct_logit_effect(hooked, n), nav, same, twin)
        pages[page_name(n)] = page.html()
        unit_max = float(scan.tensor(n.hook, "max")[n.index])
        rows.append((n, unit_max, float(share[n.index]), tok.decode([int(mode[n.index])])))
    pages["index.html"] = index_page(model, rows)
    with atomic_path(out_dir, directory=True) as tmp:
        for name, text in pages.items():
            (tmp / name).write_text(text, encoding="utf-8")
        selected = [
            {
                "neuron": n.name,
                "layer": n.layer,
                "index": n.index,
                "max": mx,
                "token_concentration": c,
                "mode_token": t,
                "page": page_name(n),
            }
            for n, mx, c, t in rows
        ]
        write_json(tmp / "selection.json", selected)
        write_provenance(tmp, config, seed, model=model, n_pages=len(rows))


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
