"""Rules of workflow/rules/alignment.smk: the essay's four input-finding methods per model, and the
alignment metrics, nulls, figures and verdicts across layers, sizes and trained / untrained twins."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from lmfeatures.alignment.feature_inputs import (
    FeatureInputConfig,
    basis_cosines,
    embedding_ascent,
    greedy_search,
    relaxed_onehot_ascent,
    vocab_profiles,
)
from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import resolve_device
from lmfeatures.store.alignment import write_inputs
from lmfeatures.store.models import load_model


def feature_input_config(params: dict, seed: int) -> FeatureInputConfig:
    """FeatureInputConfig from the config's `alignment:` section (its other keys are the stage's)."""
    fields = FeatureInputConfig.__dataclass_fields__
    return FeatureInputConfig(**{k: v for k, v in params.items() if k in fields}, seed=seed)


def method_features(width: int, params: dict, seed: int) -> tuple[torch.Tensor, list[int]]:
    """(the configured indices (the essay's 0-4) then `random_features` seeded others below `width`,
    the random ones)."""
    fixed = list(dict.fromkeys(params["features"]))
    shuffled = torch.randperm(width, generator=torch.Generator().manual_seed(seed)).tolist()
    others = [i for i in shuffled if i not in fixed][: params["random_features"]]
    return torch.tensor(fixed + others), others


def alignment_inputs(
    *, model_dir: str, out_dir: str, model: str, alignment_params: dict, config: dict, seed: int, device: str
) -> None:
    """Exhaustive single-token profiles of every layer (and of the embedding), and for the method
    features the greedy, gradient (whole model and isolated block) and relaxed one-hot inputs of every
    layer: `profiles.safetensors` ({hook: [V, width]}) and `methods.json`."""
    cfg = feature_input_config(alignment_params, seed)
    lm, _ = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    kind, methods = alignment_params["kind"], alignment_params["methods"]
    hooks = [f"{kind}.{layer}" for layer in range(hooked.n_layers)]
    started = time.perf_counter()
    profiles = vocab_profiles(hooked, ["embed", *hooks], cfg.batch_size)
    timings = {"exhaustive": time.perf_counter() - started}
    features, random_features = method_features(profiles[hooks[0]].shape[1], alignment_params, seed)
    found = {h: {"exhaustive": profiles[h][:, features].argmax(0).tolist()} for h in hooks}
    runs = [m for m in methods if not (m == "isolated" and kind != "resid")]
    # greedy runs per hook (each its own prefixes); the gradient methods batch every hook at once
    steps = [("greedy", h) for h in hooks if "greedy" in runs] + [(m, None) for m in runs if m != "greedy"]
    for method, hook in tqdm(steps, desc=f"alignment {model}", unit="search"):
        started = time.perf_counter()
        if method == "greedy":  # from an empty prefix: its first step is a search of its own, not the exhaustive one
            found[hook]["greedy"] = greedy_search(hooked, hook, features, cfg).tolist()
        elif method in ("gradient", "isolated"):
            ascent = embedding_ascent(hooked, hooks, features, cfg, isolated=method == "isolated")
            for k, h in enumerate(hooks):
                found[h][method] = {
                    "pinv": ascent.pinv_tokens[k].tolist(),
                    "nearest": ascent.nearest_tokens[k].tolist(),
                    "activation": ascent.activation[k].tolist(),
                }
            if kind == "resid":  # an mlp.L neuron has no basis vector in the embedding space
                own, others = basis_cosines(ascent.embeddings, features)
                for k, h in enumerate(hooks):
                    found[h][method] |= {"basis_cosine": own[k].tolist(), "other_basis_cosine": others[k].tolist()}
        else:
            tokens, value = relaxed_onehot_ascent(hooked, hooks, features, cfg)
            for k, h in enumerate(hooks):
                found[h]["relaxed"] = {"tokens": tokens[k].tolist(), "activation": value[k].tolist()}
        timings[method] = timings.get(method, 0.0) + time.perf_counter() - started
    with atomic_path(out_dir, directory=True) as tmp:
        write_inputs(
            tmp,
            profiles,
            {
                "model": model,
                "kind": kind,
                "features": features.tolist(),
                "random_features": random_features,
                "hooks": found,
                "seconds": timings,
            },
        )
        write_provenance(tmp, config, seed, model=model)
