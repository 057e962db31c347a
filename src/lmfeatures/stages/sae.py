"""Rules of workflow/rules/sae.smk: SAE training and evaluation, and the per-feature checks on every
dictionary (SAE runs, neurons, untrained-twin and random-decoder controls). Formats: lmfeatures.store.sae.
"""

from __future__ import annotations

from pathlib import Path

from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.architectures import context_free_mlp_layers
from lmfeatures.lm.display import token_text
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import resolve_device
from lmfeatures.sae.checks import CheckThresholds, next_token_counts, predicted_tokens
from lmfeatures.sae.dictionary_checks import (
    NEURONS,
    ModelReader,
    add_token_classes,
    check_dictionaries,
    class_names,
    frequent_class_tokens,
    labelled_windows,
)
from lmfeatures.sae.evaluate import EVAL_BATCH, collect_activations, evaluate_sae, text_windows
from lmfeatures.sae.planted import PlantedConfig, PlantedReader, plant, planted_windows, recovery
from lmfeatures.sae.sae import SAEConfig, SparseAutoencoder, train_sae
from lmfeatures.scan.scan import DerivedHook, ScanConfig
from lmfeatures.scan.scan import scan as run_scan
from lmfeatures.store.data import load_corpus
from lmfeatures.store.models import load_model
from lmfeatures.store.sae import load_sae, save_sae, write_checks, write_planted, write_run
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
    acts = collect_activations(hooked, hook, train_windows)
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


def _check_windows(tok, corpus, params: dict, context_length: int, seed: int):
    """The selection windows (train split: best proxies, predicted tokens, token classes), the check
    windows (held-out split, documents no SAE trained on) with the scan's view of them, and the
    classes' names."""
    _, selection, class_tokens = _labelled(tok, list(corpus["train"]["text"]), params, context_length, seed + 1)
    heldout, check, _ = _labelled(tok, list(corpus["heldout"]["text"]), params, context_length, seed, class_tokens)
    return selection, heldout, check, class_names(tok, params["proxies"], class_tokens)


def _run_checks(reader, dicts, selection, check, names, params: dict, tok):
    thresholds = CheckThresholds(**params["thresholds"])
    vocab_text = lambda t: token_text(tok, [t])  # noqa: E731
    return check_dictionaries(
        reader,
        dicts,
        selection,
        check,
        names,
        thresholds,
        params["predicted_tokens"],
        params["ablation_windows"],
        vocab_text,
    )


def _proxies_json(names: list[str], found, tok) -> dict:
    return {
        "proxies": names,
        "class_tokens": found.class_tokens,
        "predicted": [[token_text(tok, [t]) for t in row if t >= 0][:8] for row in found.predicted.tolist()],
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
    selection, heldout, check, names = _check_windows(tok, corpus, sae_params, context_length, seed)
    found = _run_checks(ModelReader(hooked, layer), dicts, selection, check, names, sae_params, tok)
    derived = {
        name: DerivedHook(
            f"mlp.{layer}", (lambda a: a) if sae is None else sae.encode, sae.d_sae if sae else hooked.d_mlp
        )
        for name, sae in dicts.items()
    }
    scan_cfg = ScanConfig(context_length=context_length, kinds=[], batch_size=EVAL_BATCH, seed=seed)
    result, window_max = run_scan(hooked, heldout, scan_cfg, desc=f"scan {model} dictionaries", derived=derived)
    meta = scan_meta(
        model, model_dir, hooked, scan_cfg, heldout, list(corpus["heldout"]["doc_id"]), derived=list(dicts)
    )
    with atomic_path(out_dir, directory=True) as tmp:
        write_checks(
            tmp, (result, heldout, meta, window_max), found.tables, found.correlations, _proxies_json(names, found, tok)
        )
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
    selection, _, check, names = _check_windows(tok, load_corpus(corpus_dir), sae_params, context_length, seed)
    params = sae_params["planted"]
    cfg = PlantedConfig(
        **{k: params[k] for k in ("directions", "background", "min_tokens", "max_overlap", "noise", "gain")}, seed=seed
    )
    after_class, after_any = next_token_counts(selection.ids, selection.classes, selection.valid, hooked.vocab_size)
    predicted = predicted_tokens(after_class, after_any, sae_params["predicted_tokens"])
    planted = plant(selection, predicted, hooked.d_mlp, sae_params["k"], after_any, cfg)
    train, held = planted_windows(planted, selection, seed), planted_windows(planted, check, seed + 1)
    runs = {}
    for run in ("A", "B", "random-A", "random-B"):
        own = {key: params[key] for key in ("expansion", "tokens", "lr")}
        run_cfg = run_config(run, {**sae_params, **own})
        runs[run] = train_sae(train.acts[train.valid], run_cfg, hooked.device, desc=f"planted sae {run}")[0]
    runs[NEURONS] = None
    found = _run_checks(PlantedReader(planted, hooked.device), runs, train, held, names, sae_params, tok)
    recovered = {
        run: recovery(planted.directions, runs[run].W_dec.detach()) for run in ("A", "B", "random-A", "random-B")
    }
    summary = {
        "model": model,
        "layer": layer,
        "config": vars(cfg),
        "planted_classes": [names[c] for c in planted.classes.tolist()],
        "background_rate": planted.background_rate,
        "recovery": {run: {"feature": f.tolist(), "cosine": c.tolist()} for run, (f, c) in recovered.items()},
    }
    with atomic_path(out_dir, directory=True) as tmp:
        write_planted(tmp, found.tables, summary, _proxies_json(names, found, tok))
        write_provenance(tmp, config, seed, model=model, layer=layer)
