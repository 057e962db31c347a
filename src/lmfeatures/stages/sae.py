"""Rules of workflow/rules/sae.smk: SAE training and evaluation, and the per-feature checks on every
dictionary (SAE runs, neurons, untrained-twin and random-decoder controls). Formats: lmfeatures.store.sae.
"""

from __future__ import annotations

from pathlib import Path

from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.architectures import context_free_mlp_layers
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import resolve_device
from lmfeatures.sae.dictionary_checks import NEURONS, check_dictionaries, labelled_windows
from lmfeatures.sae.evaluate import collect_activations, evaluate_sae, text_windows
from lmfeatures.sae.sae import SAEConfig, SparseAutoencoder, train_sae
from lmfeatures.store.data import load_corpus
from lmfeatures.store.models import load_model
from lmfeatures.store.sae import load_sae, save_sae, write_checks, write_run
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
    """The five checks for every unit of every dictionary of one model at one layer: a scan of
    their units, streaming correlations and proxy counts, logit weights and ablation effects."""
    layer = int(layer)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    dicts = _dictionaries(run_dirs, hooked, with_neurons)
    heldout = load_corpus(corpus_dir)["heldout"]
    proxies = sae_params["proxies"]
    texts = list(heldout["text"])
    windows, labels = labelled_windows(tok, texts, proxies, context_length, sae_params["check_tokens"], seed)
    found = check_dictionaries(hooked, tok, layer, dicts, windows, labels, sae_params, seed, f"{model} dictionaries")
    meta = scan_meta(model, model_dir, hooked, found.scan_config, windows, list(heldout["doc_id"]), derived=list(dicts))
    with atomic_path(out_dir, directory=True) as tmp:
        write_checks(
            tmp,
            (found.result, windows, meta, found.window_max),
            found.tables,
            found.correlations,
            {"proxies": proxies, "class_tokens": found.class_tokens},
        )
        write_provenance(tmp, config, seed, model=model, layer=layer, dictionaries=list(dicts))
