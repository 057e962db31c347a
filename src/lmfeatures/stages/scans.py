"""Rules of workflow/rules/scans.smk: dataset max-activation scans, and the neuron selection that
every later stage reads."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch

from lmfeatures.io import provenance, write_provenance
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import resolve_device
from lmfeatures.scan.neurons import Neuron, NeuronSpec, resolve_neurons, token_concentration
from lmfeatures.scan.scan import (
    ScanConfig,
    ScanError,
    Windows,
    finish_scan,
    make_windows,
    merge_parts,
    scan_part,
    shard_range,
)
from lmfeatures.scan.scan import scan as run_scan
from lmfeatures.store.data import load_corpus, load_tokenizer
from lmfeatures.store.models import load_model
from lmfeatures.store.scans import (
    Scan,
    load_scan,
    load_scan_part,
    part_window_max,
    scan_meta,
    window_max_memmap,
    write_scan,
    write_scan_part,
)
from lmfeatures.store.selection import write_selection


def _windows(model_dir: str, corpus_dir: str, cfg: ScanConfig, config: dict, device: str):
    """(HookedModel, the held-out split's windows in the model's own tokens, the split's document ids)."""
    lm, tok = load_model(model_dir, resolve_device(device))
    heldout = load_corpus(corpus_dir)["heldout"]
    docs = tok(list(heldout["text"]), add_special_tokens=False)["input_ids"]
    try:
        windows = make_windows(docs, cfg.context_length, cfg.max_tokens)
    except ScanError as err:  # say which corpus: the fix is in its config or its files
        raise ScanError(f"corpus {config.get('corpus', {}).get('source')!r}, held-out split: {err}") from None
    return HookedModel(lm), windows, list(heldout["doc_id"])


@contextlib.contextmanager
def _tables_beside(out_dir: str):
    """allocate(hook, shape) -> a window-max table memory-mapped in a scratch folder beside out_dir
    (RAM stays bounded on large corpora), removed when the block ends."""
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scan-tables-", dir=Path(out_dir).parent) as tables:
        yield lambda hook, shape: window_max_memmap(tables, hook, shape)


def scan(
    *, model_dir: str, corpus_dir: str, out_dir: str, model: str, scan: dict, config: dict, seed: int, device: str
) -> None:
    """Tokenize the held-out split with the model's own tokenizer, scan every layer, write atomically."""
    cfg = ScanConfig(**scan, seed=seed)
    hooked, windows, doc_ids = _windows(model_dir, corpus_dir, cfg, config, device)
    with _tables_beside(out_dir) as on_disk:
        result, window_max = run_scan(hooked, windows, cfg, on_disk, desc=f"scan {model}")
        write_scan(out_dir, result, windows, scan_meta(model, model_dir, hooked, cfg, windows, doc_ids), window_max)
    write_provenance(out_dir, config, seed, model=model, n_tokens=int(result["n_tokens"]))


def scan_shard(
    *,
    model_dir: str,
    corpus_dir: str,
    out_dir: str,
    model: str,
    shard: str,
    shards: int,
    scan: dict,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """Shard `shard` of `shards` of the scan: its consecutive range of the windows (scan.shards)."""
    cfg = ScanConfig(**scan, seed=seed)
    hooked, windows, doc_ids = _windows(model_dir, corpus_dir, cfg, config, device)
    start, stop = shard_range(len(windows.doc), int(shard), shards, cfg.batch_size)
    if start == stop:
        n_batches = -(-len(windows.doc) // cfg.batch_size)
        raise ScanError(
            f"config key 'scan.shards': {shards} shards of {model}'s scan leave shard {shard} empty (a shard is "
            f"whole batches, and its held-out split makes {n_batches} batches of {cfg.batch_size} windows); "
            f"use at most {n_batches} shards"
        )
    with _tables_beside(out_dir) as on_disk:
        desc = f"scan {model} shard {shard}/{shards}"
        part, window_max = scan_part(hooked, windows, cfg, on_disk, desc=desc, rows=(start, stop))
        mine = Windows(*(t[start:stop] for t in (windows.doc, windows.start, windows.valid_from, windows.ids)), 0)
        meta = scan_meta(model, model_dir, hooked, cfg, windows, doc_ids)
        write_scan_part(out_dir, part, mine, meta, window_max)


def scan_merge(*, shard_dirs: list[str], out_dir: str, model: str, scan: dict, config: dict, seed: int) -> None:
    """The scan from its shards: the same folder as one scan job writes (exact but for the moments'
    float rounding, Chan et al.'s merge in another order)."""
    cfg = ScanConfig(**scan, seed=seed)
    loaded = [load_scan_part(d) for d in shard_dirs]
    meta = loaded[0][2]
    part = merge_parts([p for p, _, _ in loaded], cfg)
    windows = Windows(
        *(torch.cat([getattr(w, f) for _, w, _ in loaded]) for f in ("doc", "start", "valid_from", "ids")),
        skipped_short_docs=meta["skipped_short_docs"],
    )
    with _tables_beside(out_dir) as on_disk:
        window_max = {}
        for hook in meta["hooks"]:
            window_max[hook] = table = on_disk(hook, (part.stop, len(part.state[hook]["max"])))
            for d, (p, _, _) in zip(shard_dirs, loaded):
                table[p.start : p.stop] = part_window_max(d, hook)
        result = finish_scan(part, window_max, cfg)
        write_scan(out_dir, result, windows, meta, window_max)
    write_provenance(out_dir, config, seed, model=model, n_tokens=int(result["n_tokens"]), shards=len(shard_dirs))


def _page_rows(scan: Scan, neurons: list[Neuron], tokenizer) -> list[dict]:
    """The selection's page entries: each neuron's max, token concentration and most common max token."""
    concentration = {h: token_concentration(scan, h) for h in {n.hook for n in neurons}}  # once per layer
    rows = []
    for n in neurons:
        share, mode = concentration[n.hook]
        rows.append(
            {
                "neuron": n.name,
                "layer": n.layer,
                "index": n.index,
                "max": float(scan.tensor(n.hook, "max")[n.index]),
                "token_concentration": float(share[n.index]),
                "mode_token": tokenizer.decode([int(mode[n.index])]),
            }
        )
    return rows


def select_neurons(
    *,
    scan_dir: str,
    model_dir: str,
    partner_scan: list[str],
    out_json: str,
    model: str,
    pages: dict,
    epo: dict | None,
    prune: dict | None,
    partner: dict | None,
    seed: int,
) -> None:
    """The neurons of one model that EPO (`epo`: its selection spec, None if EPO does not run on the
    model), pruning (`prune`, EPO's neurons added) and the pages (`pages`, every stage's neurons
    added) look at. `partner` = {"name", "role"} of the untrained twin (role "twin") or of the
    trained model (role "trained"): a twin pages every neuron its trained model pages, so the links
    between the two resolve; `partner_scan` is the partner's scan folder as a list."""
    scan = load_scan(scan_dir, model_dir=model_dir)
    epo_neurons = resolve_neurons(scan, NeuronSpec(**epo, seed=seed)) if epo is not None else []
    pruned = resolve_neurons(scan, NeuronSpec(**prune, seed=seed), extra=epo_neurons) if prune is not None else []
    spec = NeuronSpec(**pages, seed=seed)
    extra = sorted(set(pruned) | set(epo_neurons))
    partner_pages: list[Neuron] = []
    if partner is not None and partner["role"] == "trained":  # this is the twin
        partner_pages = resolve_neurons(load_scan(partner_scan[0]), spec)
        paged = resolve_neurons(scan, spec, extra=partner_pages + extra)
    else:
        paged = resolve_neurons(scan, spec, extra=extra)
        if partner is not None:  # this is the trained model: its twin pages these too
            partner_pages = resolve_neurons(load_scan(partner_scan[0]), spec, extra=paged)
    write_selection(
        out_json,
        {
            "model": model,
            "epo": [n.name for n in epo_neurons],
            "prune": [n.name for n in pruned],
            "pages": _page_rows(scan, paged, load_tokenizer(model_dir)),
            "partner_pages": [n.name for n in partner_pages],
            # a file, not a folder: its provenance travels inside it
            "provenance": provenance({"neurons": pages, "epo": epo, "prune": prune}, seed, model=model),
        },
    )
