"""Seed 004's checks for every unit of every dictionary read at one MLP layer (SAE runs, the layer's
neurons, controls): a scan of their units (one derived hook each), streaming proxy counts and
correlations, logit weights and ablation effects, gathered into one table per dictionary. No file I/O.

    result = check_dictionaries(model, tokenizer, layer, dictionaries, windows, labels, params, seed)
    result.tables["A"]    # one row per unit: statistics, the five checks' values, pass_* columns
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lmfeatures.lm.display import token_text
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.sae.checks import (
    CHECKS,
    CheckAccumulator,
    CheckThresholds,
    ablation_effects,
    best_match,
    decoder_neuron_share,
    logit_weights,
    next_token_logprobs,
    passes,
)
from lmfeatures.sae.evaluate import EVAL_BATCH, text_windows, valid_positions
from lmfeatures.sae.proxies import document_labels
from lmfeatures.sae.sae import SparseAutoencoder
from lmfeatures.scan.scan import DerivedHook, ScanConfig, Windows
from lmfeatures.scan.scan import scan as run_scan

NEURONS = "neurons"  # the dictionary of the layer's neurons


def other_run(run: str) -> str:
    """The run a run's universality is measured against: A <-> B, random-A <-> random-B; for a
    third seed C, A."""
    kind, dash, letter = run.rpartition("-")
    return f"{kind}{dash}{'B' if letter == 'A' else 'A'}"


def labelled_windows(tokenizer, texts: list[str], proxies: list[str], context_length: int, max_tokens: int, seed: int):
    """Held-out windows (text_windows: a seeded sample of the split) and their proxy labels bool
    [windows, pos, classes]."""
    windows = text_windows(tokenizer, texts, context_length, max_tokens, seed)
    used = windows.doc.unique().tolist()  # label only the documents the token budget reaches
    _, used_labels = document_labels(tokenizer, [texts[d] for d in used], proxies)
    labels = dict(zip(used, used_labels))
    window_labels = torch.stack(
        [labels[d][s : s + context_length] for d, s in zip(windows.doc.tolist(), windows.start.tolist())]
    )
    return windows, window_labels


def _encode(sae: SparseAutoencoder | None):
    return (lambda acts: acts) if sae is None else sae.encode


@torch.no_grad()
def _window_reads(
    hooked: HookedModel, layer: int, ids: torch.Tensor, sae: SparseAutoencoder | None, row_window, row_unit
):
    """For windows ids [W, pos]: what mlp.{layer} reads normally [W, pos, d_mlp] (the SAE's
    reconstruction, or the neurons themselves), the next-token log-probs with that [W, pos - 1],
    and each row's unit's activation [R, pos] (row r: unit row_unit[r] in window row_window[r])."""
    hook = f"mlp.{layer}"
    reads, base = [], []
    activation = torch.zeros(len(row_window), ids.shape[1])
    for b in range(0, len(ids), EVAL_BATCH):
        batch = ids[b : b + EVAL_BATCH].to(hooked.device)
        acts = hooked.run([hook], input_ids=batch)[hook].float()
        z = acts if sae is None else sae.encode(acts)
        x = acts if sae is None else sae.decode(z)
        base.append(next_token_logprobs(hooked, batch, {hook: lambda a, x=x: x}).cpu())
        reads.append(x.cpu())
        rows = ((row_window >= b) & (row_window < b + len(batch))).nonzero()[:, 0]
        activation[rows] = z[(row_window[rows] - b).to(z.device), :, row_unit[rows].to(z.device)].cpu()
    return reads and torch.cat(reads), base and torch.cat(base), activation


def _check_table(name, sae, other, acc, scan_result, windows, hooked, layer, tok, w_out, w_u, params) -> pd.DataFrame:
    """One row per unit of a dictionary: its statistics, the five checks' values and whether it passes."""
    thresholds = CheckThresholds(**params["thresholds"])
    scores = acc.proxy_scores()
    n_units = len(scores["density"])
    live = scores["density"] > 0
    directions = torch.eye(hooked.d_mlp) if sae is None else sae.W_dec.detach().cpu()
    # downstream: remove each live unit on its top windows; what the model reads without the
    # removal is computed once per window, so each (unit, window) row costs one forward pass
    top_window = scan_result[f"{name}.top_window"][: params["ablation_windows"]]  # [n, units]
    unit_ids = torch.arange(n_units)[None, :].expand_as(top_window)
    keep = (top_window >= 0) & live[None, :]
    rows_units, rows_windows = unit_ids[keep], top_window[keep]
    shown, row_window = rows_windows.unique(return_inverse=True)
    base_reads, base, activation = _window_reads(hooked, layer, windows.ids[shown], sae, row_window, rows_units)
    w_dec = directions.float()

    def edited(rows: slice) -> torch.Tensor:
        return base_reads[row_window[rows]] - activation[rows, :, None] * w_dec[rows_units[rows]][:, None, :]

    signed, magnitude, count = ablation_effects(
        hooked, layer, windows.ids[rows_windows], activation > 0, edited, base[row_window]
    )
    downstream = torch.full((n_units,), math.nan)
    downstream_signed = torch.full((n_units,), math.nan)
    weight = count.nan_to_num(0.0)
    for target, values in ((downstream, magnitude), (downstream_signed, signed)):
        total = torch.zeros(n_units).index_add_(0, rows_units, values.nan_to_num(0.0) * weight)
        counts = torch.zeros(n_units).index_add_(0, rows_units, weight)
        target[:] = torch.where(counts > 0, total / counts, math.nan)
    top_ids, top_w, bottom_ids, bottom_w = logit_weights(directions, w_out.cpu(), w_u.cpu(), top=5)
    frame = pd.DataFrame(
        {
            "unit": torch.arange(n_units).numpy(),
            "live": live.numpy(),
            "density": scores["density"].numpy(),
            "max": scan_result[f"{name}.max"].numpy(),
            "mean": scan_result[f"{name}.mean"].numpy(),
            "best_proxy": [params["proxies"][i] if i >= 0 else None for i in scores["best_proxy"].tolist()],
            "precision": scores["precision"].numpy(),
            "recall": scores["recall"].numpy(),
            "f1": scores["f1"].numpy(),
            "llr": scores["llr"].numpy(),
            "ablation_mean_abs": downstream.numpy(),
            "ablation_mean": downstream_signed.numpy(),
            "top_logits": [[token_text(tok, t) for t in row] for row in top_ids.tolist()],
            "top_logit_weights": top_w.tolist(),
            "bottom_logits": [[token_text(tok, t) for t in row] for row in bottom_ids.tolist()],
            "bottom_logit_weights": bottom_w.tolist(),
        }
    )
    nan = torch.full((n_units,), math.nan)
    neuron_r = nan
    if sae is not None:
        corr = acc.correlation("neurons")
        best_neuron, neuron_r = best_match(corr.abs())
        top_neuron, top_share = decoder_neuron_share(directions)
        frame["best_neuron"] = best_neuron.numpy()
        frame["neuron_corr"] = neuron_r.numpy()
        frame["decoder_top_neuron"] = top_neuron.numpy()
        frame["decoder_top_share"] = top_share.numpy()
    universality = nan
    if other is not None:
        match, universality = best_match(acc.correlation("other"))
        cos_match, cos = best_match(directions @ other.W_dec.detach().cpu().T)
        frame["other_unit"] = match.numpy()
        frame["other_corr"] = universality.numpy()
        frame["other_decoder_unit"] = cos_match.numpy()
        frame["other_decoder_cos"] = cos.numpy()
    inside, total = acc.best_class_hist(scores["best_proxy"])
    frame["hist_in_proxy"] = inside.tolist()
    frame["hist_all"] = total.tolist()
    verdicts = passes(
        {
            "specificity": scores["precision"],
            "sensitivity": scores["recall"],
            "downstream": downstream,
            "not_a_neuron": neuron_r,
            "universality": universality,
        },
        thresholds,
    )
    for check in CHECKS:
        frame[f"pass_{check}"] = (verdicts[check] & live).numpy()
    applicable = [c for c in CHECKS if not (sae is None and c in ("not_a_neuron", "universality"))]
    frame["pass_all"] = frame[[f"pass_{c}" for c in applicable]].all(axis=1)
    return frame


@dataclass
class DictionaryChecks:
    """What check_dictionaries found: the scan of every dictionary's units (`scan_config`, `result`,
    `window_max`, as the scan returns them), one check table per dictionary, each SAE's Pearson r
    with the neurons {"{name}.neurons": [d_sae, d_mlp]}, and the token count of each proxy class."""

    scan_config: ScanConfig
    result: dict[str, torch.Tensor]
    window_max: dict[str, np.ndarray]
    tables: dict[str, pd.DataFrame]
    correlations: dict[str, torch.Tensor]
    class_tokens: list[int]


def check_dictionaries(
    hooked: HookedModel,
    tok,
    layer: int,
    dicts: dict[str, SparseAutoencoder | None],
    windows: Windows,
    labels: torch.Tensor,
    params: dict,
    seed: int,
    desc: str = "dictionaries",
) -> DictionaryChecks:
    """The five checks for every unit of every dictionary of one layer (`dicts`: {name: SAE, or None
    for the neurons}) on `windows` with their proxy labels bool [windows, pos, classes]: a scan of
    their units, streaming correlations and proxy counts, logit weights and ablation effects."""
    hook = f"mlp.{layer}"
    proxies = params["proxies"]
    context_length = windows.ids.shape[1]
    width = {name: hooked.d_mlp if sae is None else sae.d_sae for name, sae in dicts.items()}
    derived = {name: DerivedHook(hook, _encode(sae), width[name]) for name, sae in dicts.items()}
    scan_cfg = ScanConfig(context_length=context_length, kinds=[], batch_size=EVAL_BATCH, seed=seed)
    result, window_max = run_scan(hooked, windows, scan_cfg, desc=f"scan {desc}", derived=derived)
    maxima = {name: result[f"{name}.max"] for name in dicts}
    others = {name: other_run(name) for name in dicts if name != NEURONS and other_run(name) in dicts}
    accumulators = {
        name: CheckAccumulator(
            width[name], None if sae is None else hooked.d_mlp, width.get(others.get(name)), len(proxies), maxima[name]
        )
        for name, sae in dicts.items()
    }
    context = windows.ids.shape[1]
    with torch.no_grad():
        for b in tqdm(range(0, len(windows.ids), EVAL_BATCH), desc="checks", unit="batch", mininterval=2.0):
            rows = slice(b, b + EVAL_BATCH)
            acts = hooked.run([hook], input_ids=windows.ids[rows].to(hooked.device))[hook]
            valid = valid_positions(windows, rows, context)
            x = acts[valid.to(acts.device)].float()
            units = {name: _encode(sae)(x) for name, sae in dicts.items()}
            for name, acc in accumulators.items():
                acc.update(
                    units[name],
                    labels[rows][valid],
                    neurons=x if dicts[name] is not None else None,
                    other=units.get(others.get(name)),
                )
    w_u = hooked.folded_unembedding().detach()
    w_out = hooked.mlp_out_weight(layer).detach()
    tables = {}
    for name, sae in dicts.items():
        tables[name] = _check_table(
            name,
            sae,
            dicts.get(others.get(name)),
            accumulators[name],
            result,
            windows,
            hooked,
            layer,
            tok,
            w_out,
            w_u,
            params,
        )
    correlations = {
        f"{name}.neurons": accumulators[name].correlation("neurons").contiguous()
        for name, sae in dicts.items()
        if sae is not None
    }
    class_tokens = accumulators[next(iter(dicts))].class_count.tolist()
    return DictionaryChecks(scan_cfg, result, window_max, tables, correlations, class_tokens)
