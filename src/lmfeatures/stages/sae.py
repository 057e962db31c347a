"""Rules of workflow/rules/sae.smk: SAE training and evaluation, and the per-feature checks on every
dictionary (SAE runs, neurons, untrained-twin and random-decoder controls). Formats: lmfeatures.store.sae.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.architectures import context_free_mlp_layers
from lmfeatures.lm.display import token_text
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import resolve_device
from lmfeatures.sae.checks import CheckThresholds
from lmfeatures.sae.dictionary_checks import (
    NEURONS,
    CheckWindows,
    ModelReader,
    add_token_classes,
    check_dictionaries,
    class_names,
    class_predictions,
    frequent_class_tokens,
    labelled_windows,
)
from lmfeatures.sae.evaluate import EVAL_BATCH, collect_activations, counted_tokens, evaluate_sae, text_windows
from lmfeatures.sae.planted import PlantedConfig, PlantedReader, plant, planted_windows, recovery
from lmfeatures.sae.sae import SAEConfig, SparseAutoencoder, train_sae
from lmfeatures.scan.scan import DerivedHook, ScanConfig, Windows
from lmfeatures.scan.scan import scan as run_scan
from lmfeatures.store.data import load_corpus
from lmfeatures.store.models import load_model
from lmfeatures.store.sae import activation_file, load_sae, save_sae, write_checks, write_planted, write_run
from lmfeatures.store.scans import scan_meta


def run_config(run: str, params: dict) -> SAEConfig:
    """The SAEConfig of a run name: "A", "B", ... (seeds in order), "relu-A" (ReLU + L1),
    "random-A", ... (decoder frozen at random unit directions)."""
    kind, _, letter = run.rpartition("-")
    seed = params["seeds"][ord(letter) - ord("A")]
    return SAEConfig(
        architecture="relu" if kind == "relu" else params["architecture"],
        expansion=params["expansion"],
        k=params["k"],
        lr=params["relu_lr"] if kind == "relu" else params["lr"],
        batch_size=params["batch_size"],
        tokens=params["tokens"],
        dead_tokens=params["dead_tokens"],
        max_dead_share=params["max_dead_share"],
        frozen_decoder=kind == "random",
        seed=seed,
    )


def sae_train(
    *,
    model_dir: str,
    corpus_dir: str,
    out_dir: str,
    model: str,
    layer: str,
    run: str,
    sae_params: dict,
    context_length: int,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """Train one SAE on mlp.{layer} activations of the train split, evaluate it on the held-out
    split, write it in SAELens's layout with its training log and evaluation."""
    layer = int(layer)
    cfg = run_config(run, sae_params)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    hook = f"mlp.{layer}"
    hooked.check_hook(hook)
    corpus = load_corpus(corpus_dir)
    # every run reads the same sampled windows (the runs differ by their seed alone), the checks the same held-out ones
    train_windows = text_windows(tok, list(corpus["train"]["text"]), context_length, cfg.tokens, seed)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # named like atomic_path's temporaries, so a killed run's file is cleared by the next run's write
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".partial", dir=out.parent) as scratch:
        acts = activation_file(Path(scratch) / "activations.npy", counted_tokens(train_windows), hooked.d_mlp)
        collect_activations(hooked, hook, train_windows, acts)
        sae, log = train_sae(acts, cfg, hooked.device, desc=f"sae {model} L{layer} {run}")
        del acts
    heldout = text_windows(tok, list(corpus["heldout"]["text"]), context_length, sae_params["check_tokens"], seed)
    evaluation = evaluate_sae(hooked, sae, layer, heldout)
    with atomic_path(out_dir, directory=True) as tmp:
        save_sae(tmp, sae, hook, model, {"run": run, "training": vars(cfg)})
        context_free = layer in context_free_mlp_layers(lm.config)
        write_run(tmp, log, {"model": model, "layer": layer, "run": run, "context_free": context_free, **evaluation})
        write_provenance(tmp, config, cfg.seed, model=model, layer=layer, run=run)


def _dictionaries(run_dirs: list[str], hooked: HookedModel, with_neurons: bool) -> dict[str, SparseAutoencoder | None]:
    """{dictionary name: its SAE (None for the neurons)}; checked runs only (relu-A is evaluated, not checked)."""
    found: dict[str, SparseAutoencoder | None] = {}
    for path in run_dirs:
        name = Path(path).name
        if not name.startswith("relu-"):
            found[name] = load_sae(path, hooked)[0].to(hooked.device)
    if with_neurons:
        found[NEURONS] = None
    return found


def _labelled(tok, texts, params, context_length, seed, class_tokens=None):
    """(scan windows, CheckWindows with hand and token classes, the token classes' ids)."""
    windows, labelled = labelled_windows(tok, texts, params["proxies"], context_length, params["check_tokens"], seed)
    if class_tokens is None:
        classes = params["token_classes"]
        class_tokens = frequent_class_tokens(labelled, classes["min_tokens"], classes["max_classes"])
    return windows, add_token_classes(labelled, class_tokens), class_tokens


@dataclass
class _CheckData:
    """What the checks read: the selection windows (train split: best proxies, predicted tokens,
    token classes), the check windows (held-out split, documents no SAE trained on) and the scan's
    view of them, the classes' names, their predicted tokens [C, P] and each token's count as a next
    token in the selection windows [vocab]."""

    selection: CheckWindows
    heldout: Windows
    check: CheckWindows
    names: list[str]
    predicted: torch.Tensor
    next_counts: torch.Tensor


def _check_data(tok, corpus, params: dict, context_length: int, seed: int, vocab: int) -> _CheckData:
    _, selection, class_tokens = _labelled(tok, list(corpus["train"]["text"]), params, context_length, seed + 1)
    heldout, check, _ = _labelled(tok, list(corpus["heldout"]["text"]), params, context_length, seed, class_tokens)
    predicted, next_counts = class_predictions(selection, vocab, params["predicted_tokens"])
    names = class_names(tok, params["proxies"], class_tokens)
    return _CheckData(selection, heldout, check, names, predicted, next_counts)


def _run_checks(reader, dicts, selection, check, data: _CheckData, params: dict, tok, seed: int, shown_classes):
    """check_dictionaries with the config's thresholds and downstream sample; selection / check: data's
    windows, or the planted ones built on them; shown_classes: the classes whose best units the
    report shows (their downstream check is measured whatever the sample)."""
    thresholds = CheckThresholds(**params["thresholds"])
    vocab_text = lambda t: token_text(tok, [t])  # noqa: E731
    return check_dictionaries(
        reader,
        dicts,
        selection,
        check,
        data.names,
        data.predicted,
        thresholds,
        params["ablation_windows"],
        vocab_text,
        downstream_units=params["downstream_units"],
        seed=seed,
        shown_classes=shown_classes,
    )


def _proxies_json(data: _CheckData, found, tok) -> dict:
    return {
        "proxies": data.names,
        "class_tokens": found.class_tokens,
        "predicted": [[token_text(tok, [t]) for t in row if t >= 0][:8] for row in data.predicted.tolist()],
    }


def sae_checks(
    *,
    model_dir: str,
    corpus_dir: str,
    run_dirs: list[str],
    out_dir: str,
    model: str,
    layer: str,
    with_neurons: bool,
    sae_params: dict,
    context_length: int,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """The checks for every unit of every dictionary of one model at one layer (best proxies chosen
    on train-split windows, scored on held-out ones), and a scan of their units for the pages."""
    layer = int(layer)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    dicts = _dictionaries(run_dirs, hooked, with_neurons)
    corpus = load_corpus(corpus_dir)
    data = _check_data(tok, corpus, sae_params, context_length, seed, hooked.vocab_size)
    found = _run_checks(
        ModelReader(hooked, layer),
        dicts,
        data.selection,
        data.check,
        data,
        sae_params,
        tok,
        seed,
        shown_classes=range(len(sae_params["proxies"])),  # the hand classes: the report's feature table
    )
    derived = {
        name: DerivedHook(
            f"mlp.{layer}", (lambda a: a) if sae is None else sae.encode, sae.d_sae if sae else hooked.d_mlp
        )
        for name, sae in dicts.items()
    }
    scan_cfg = ScanConfig(context_length=context_length, kinds=[], batch_size=EVAL_BATCH, seed=seed)
    result, window_max = run_scan(hooked, data.heldout, scan_cfg, desc=f"scan {model} dictionaries", derived=derived)
    meta = scan_meta(
        model, model_dir, hooked, scan_cfg, data.heldout, list(corpus["heldout"]["doc_id"]), derived=list(dicts)
    )
    with atomic_path(out_dir, directory=True) as tmp:
        scan = (result, data.heldout, meta, window_max)
        write_checks(tmp, scan, found.tables, found.correlations, _proxies_json(data, found, tok))
        write_provenance(tmp, config, seed, model=model, layer=layer, dictionaries=list(dicts))


def sae_planted(
    *,
    model_dir: str,
    corpus_dir: str,
    out_dir: str,
    model: str,
    layer: str,
    sae_params: dict,
    context_length: int,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """The planted ground truth (lmfeatures.sae.planted) on the model's tokens, classes and width:
    SAEs A, B and random-decoder A, B trained on planted activations of the selection windows, and
    every check on the held-out windows with the planted readout."""
    layer = int(layer)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    data = _check_data(tok, load_corpus(corpus_dir), sae_params, context_length, seed, hooked.vocab_size)
    params = sae_params["planted"]
    cfg = PlantedConfig(
        **{k: params[k] for k in ("directions", "background", "min_tokens", "max_overlap", "noise", "gain")}, seed=seed
    )
    planted = plant(data.selection, data.predicted, hooked.d_mlp, sae_params["k"], data.next_counts, cfg)
    train, held = planted_windows(planted, data.selection, seed), planted_windows(planted, data.check, seed + 1)
    runs = {}
    for run in ("A", "B", "random-A", "random-B"):
        own = {key: params[key] for key in ("expansion", "tokens", "lr")}
        run_cfg = run_config(run, {**sae_params, **own})
        runs[run] = train_sae(train.acts[train.valid], run_cfg, hooked.device, desc=f"planted sae {run}")[0]
    runs[NEURONS] = None
    reader = PlantedReader(planted, hooked.device)
    found = _run_checks(reader, runs, train, held, data, sae_params, tok, seed, shown_classes=planted.classes.tolist())
    recovered = {
        run: recovery(planted.directions, runs[run].W_dec.detach()) for run in ("A", "B", "random-A", "random-B")
    }
    summary = {
        "model": model,
        "layer": layer,
        "config": vars(cfg),
        "planted_classes": [data.names[c] for c in planted.classes.tolist()],
        "background_rate": planted.background_rate,
        "recovery": {run: {"feature": f.tolist(), "cosine": c.tolist()} for run, (f, c) in recovered.items()},
    }
    with atomic_path(out_dir, directory=True) as tmp:
        write_planted(tmp, found.tables, summary, _proxies_json(data, found, tok))
        write_provenance(tmp, config, seed, model=model, layer=layer)
