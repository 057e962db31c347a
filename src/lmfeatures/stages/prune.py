"""Rules of workflow/rules/prune.smk: minimal activating examples, variants and a held-out score per neuron."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from lmfeatures.config import fill_mask_path
from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.architectures import context_free_mlp_layers
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import load_fill_mask_model, load_fill_mask_tokenizer, resolve_device
from lmfeatures.prune.evaluate import prune_neuron
from lmfeatures.prune.fill_mask import FillMaskProposer, word_overlap
from lmfeatures.prune.prune import prune_config
from lmfeatures.scan.neurons import Neuron
from lmfeatures.store.models import load_model
from lmfeatures.store.prune import write_evaluation, write_neuron
from lmfeatures.store.scans import load_scan
from lmfeatures.store.selection import read_selection


def neutral_token(windows: torch.Tensor, tokenizer) -> int:
    """The default neutral token: the most frequent whitespace-only token of the scanned windows."""
    counts = torch.bincount(windows.flatten(), minlength=len(tokenizer))
    for token in counts.argsort(descending=True).tolist():
        if tokenizer.decode([token]).isspace():
            return token
    return int(counts.argmax())


def prune_neurons(
    *,
    model_dir: str,
    scan_dir: str,
    selection_json: str,
    out_dir: str,
    model: str,
    prune_params: dict,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """For each of the selection's pruning neurons (EPO's included): MAEs, token importance and
    variants of the top examples of half its documents (`{neuron}.parquet`), the N2G predictor and
    the two token lookups fitted on them (`{neuron}.predictor.json`), and how well they predict it
    on the other documents' top examples and random windows (`evaluation.json`)."""
    torch.manual_seed(seed)
    cfg = prune_config(prune_params)
    scan = load_scan(scan_dir, model_dir=model_dir)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    vocab = [tok.decode([t]) for t in range(hooked.vocab_size)]
    line_break = torch.tensor([any(s in text for s in prune_params["separators"]) for text in vocab])
    content = torch.tensor([any(c.isalnum() for c in text) for text in vocab])  # the report skips stop words
    neutral = prune_params["neutral_token"]
    if neutral == "auto":
        neutral = neutral_token(scan.windows.ids, tok)
    propose, incompatible = fill_mask_proposer(prune_params, cfg, tok, hooked.device)
    neurons = [Neuron.from_name(n) for n in read_selection(selection_json)["prune"]]
    context_free_layers = context_free_mlp_layers(lm.config)
    with atomic_path(out_dir, directory=True) as tmp:
        evaluation = []
        for neuron in tqdm(neurons, desc=f"prune {model}", unit="neuron"):
            if incompatible:
                result, fitted, rows = {"skipped": incompatible}, None, []
            else:
                context_free = neuron.layer in context_free_layers
                result, fitted, rows = prune_neuron(
                    hooked, tok, scan, neuron, cfg, neutral, content, line_break, propose, context_free
                )
            evaluation.append({"model": model, "neuron": neuron.name, "layer": neuron.layer, **result})
            write_neuron(tmp, neuron.name, rows, fitted)
        write_evaluation(tmp, {"model": model, "neutral_token": vocab[neutral], "neurons": evaluation})
        write_provenance(tmp, config, seed, model=model)


MIN_WORD_OVERLAP = 0.05  # below this share of its words, a fill-mask model cannot propose for this tokenizer


def fill_mask_proposer(prune_params: dict, cfg, studied, device) -> tuple[FillMaskProposer | None, str | None]:
    """(proposer, None) for `prune.proposer` (None: the studied model proposes), or (None, reason)
    when the fill-mask model's words are too rarely single tokens of the studied tokenizer."""
    source = prune_params["proposer"]
    if source == "model":
        return None, None
    path = fill_mask_path(source)
    mlm_tok = load_fill_mask_tokenizer(path)
    overlap = word_overlap(mlm_tok, studied)
    if overlap < MIN_WORD_OVERLAP:
        return None, (
            f"fill-mask model {source}: only {overlap:.1%} of its words are single tokens of this model's "
            f"tokenizer (need {MIN_WORD_OVERLAP:.0%}); use proposer: model"
        )
    mlm = load_fill_mask_model(path, device)
    return FillMaskProposer(mlm, mlm_tok, studied, n=cfg.n_substitutes, candidate_k=cfg.candidate_k), None
