"""Activations for SAE training and an SAE's evaluation on held-out windows: L0, explained variance,
MSE, dead / dense shares and next-token cross-entropy with the reconstruction spliced in. No file I/O.

    windows = text_windows(tokenizer, texts, context_length, max_tokens, seed)  # a seeded sample of the split
    acts = torch.empty(counted_tokens(windows), model.d_mlp, dtype=torch.float16)  # or file-backed
    collect_activations(model, "mlp.1", windows, acts)       # fills acts [tokens, d_mlp]
    evaluation = evaluate_sae(model, sae, layer, windows)
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.sae.checks import target_logprobs
from lmfeatures.sae.sae import ReconstructionStats, SparseAutoencoder, loss_recovered
from lmfeatures.scan.scan import Windows, make_windows

EVAL_BATCH = 16  # windows per forward in evaluation and checks


def text_windows(tokenizer, texts: list[str], context_length: int, max_tokens: int, seed: int) -> Windows:
    """Windows drawn from the whole split, not its first documents (a corpus sorted by path would give
    a few modules' worth): the full non-overlapping windows of make_windows (a document's tail window,
    which overlaps the one before it, left out) and a seeded sample of ceil(max_tokens /
    context_length) of them, in document order. Every token of a sampled window counts."""
    every = make_windows(tokenizer(texts, add_special_tokens=False)["input_ids"], context_length)
    full = (every.valid_from == 0).nonzero()[:, 0]
    n_windows = min(len(full), -(-max_tokens // context_length))
    keep = full[torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))[:n_windows].sort().values]
    return Windows(
        every.doc[keep], every.start[keep], every.valid_from[keep], every.ids[keep], every.skipped_short_docs
    )


def valid_positions(windows: Windows, rows: slice, context_length: int) -> torch.Tensor:
    """bool [rows, pos]: the positions these windows count (not the context-only ones)."""
    return torch.arange(context_length)[None, :] >= windows.valid_from[rows, None]


def counted_tokens(windows: Windows) -> int:
    """How many tokens of `windows` count (collect_activations' rows)."""
    return int(valid_positions(windows, slice(None), windows.ids.shape[1]).sum())


@torch.no_grad()
def collect_activations(model: HookedModel, hook: str, windows: Windows, out: torch.Tensor, batch_size: int = 64):
    """Write the activations at `hook` of every counted token of `windows` into out [tokens, width]
    (float16, counted_tokens(windows) rows; the caller's, e.g. backed by a file so that the training
    activations need not fit in RAM), one forward per batch that stops after the hook's block."""
    context, at = windows.ids.shape[1], 0
    for b in tqdm(range(0, len(windows.ids), batch_size), desc=f"activations {hook}", unit="batch", mininterval=2.0):
        rows = slice(b, b + batch_size)
        acts = model.run([hook], input_ids=windows.ids[rows].to(model.device))[hook]
        counted = acts[valid_positions(windows, rows, context).to(acts.device)].half().cpu()
        out[at : at + len(counted)] = counted
        at += len(counted)


@torch.no_grad()
def evaluate_sae(model: HookedModel, sae: SparseAutoencoder, layer: int, windows: Windows) -> dict:
    """L0, explained variance, MSE, dead and dense shares on `windows`, and next-token cross-entropy
    clean, with the reconstruction spliced in at mlp.{layer}, and with it zero-ablated."""
    hook = f"mlp.{layer}"
    stats = ReconstructionStats(sae.d_in, sae.d_sae)
    losses = {"clean": 0.0, "spliced": 0.0, "zero_ablated": 0.0}
    n_predicted = 0
    context = windows.ids.shape[1]
    for b in tqdm(range(0, len(windows.ids), EVAL_BATCH), desc="evaluate", unit="batch", mininterval=2.0):
        rows = slice(b, b + EVAL_BATCH)
        ids = windows.ids[rows].to(model.device)
        valid = valid_positions(windows, rows, context).to(model.device)
        predicted = valid[:, :-1]  # positions with a next token
        runs = {
            "clean": model.run([hook], input_ids=ids, return_logits=True),
            "spliced": model.run([], input_ids=ids, return_logits=True, edit={hook: sae}),
            "zero_ablated": model.run([], input_ids=ids, return_logits=True, edit={hook: torch.zeros_like}),
        }
        for name, out in runs.items():
            losses[name] -= float(target_logprobs(out["logits"], ids)[predicted].sum())
        n_predicted += int(predicted.sum())
        x = runs["clean"][hook][valid].float()
        z = sae.encode(x)
        stats.update(x, sae.decode(z), z)
    result = stats.result()
    ce = {f"ce_{k}": v / n_predicted for k, v in losses.items()}
    density = result.pop("density")
    return {
        **result,
        **ce,
        "loss_recovered": loss_recovered(ce["ce_clean"], ce["ce_spliced"], ce["ce_zero_ablated"]),
        "density_histogram": np.histogram(np.log10(density.numpy() + 1e-10), bins=20, range=(-10, 0))[0].tolist(),
    }
