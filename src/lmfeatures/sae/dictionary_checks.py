"""Seed 004's checks for every unit of every dictionary read at one MLP layer (SAE runs, the layer's
neurons, controls), gathered into one table per dictionary. No file I/O.

    found = check_dictionaries(reader, dictionaries, selection, check, class_names, thresholds)
    found.tables["A"]    # one row per unit: statistics, the checks' values, pass_* columns

The layer is seen through a reader: `ModelReader` for a model (its mlp.L activations, and its logits
with what mlp.L reads replaced), `lmfeatures.sae.planted.PlantedReader` for the planted ground truth.
The selection windows choose each unit's best proxy and the tokens each class predicts; the check
windows score them (lmfeatures.sae.checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lmfeatures.lm.display import token_text
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.sae.checks import (
    CHECKS,
    MEMORY,
    SAE_ONLY,
    CheckThresholds,
    Correlations,
    ProxyScores,
    ProxySelection,
    SparseCodes,
    best_correlations,
    best_dot,
    best_match,
    block_rows,
    class_logprob,
    decoder_neuron_share,
    firing,
    logit_scores,
    next_token_counts,
    passes,
    predicted_tokens,
)
from lmfeatures.sae.evaluate import EVAL_BATCH, text_windows
from lmfeatures.sae.proxies import document_labels, frequent_tokens, token_class_name, token_classes
from lmfeatures.sae.sae import SparseAutoencoder
from lmfeatures.scan.scan import Windows

NEURONS = "neurons"  # the dictionary of the layer's neurons


def other_run(run: str) -> str:
    """The run a run's universality is measured against: A <-> B, random-A <-> random-B; for a
    third seed C, A."""
    kind, dash, letter = run.rpartition("-")
    return f"{kind}{dash}{'B' if letter == 'A' else 'A'}"


@dataclass
class CheckWindows:
    """Windows with their class labels: ids [W, pos], valid bool [W, pos] (the positions counted),
    classes bool [W, pos, C]."""

    ids: Tensor
    valid: Tensor
    classes: Tensor

    def __len__(self) -> int:
        return len(self.ids)


def labelled_windows(
    tokenizer, texts: list[str], proxies: list[str], context_length: int, max_tokens: int, seed: int
) -> tuple[Windows, CheckWindows]:
    """A seeded sample of the split's windows (text_windows, as the scan takes them) and the same
    windows labelled with the hand classes."""
    windows = text_windows(tokenizer, texts, context_length, max_tokens, seed)
    used = windows.doc.unique().tolist()  # label only the documents the token budget reaches
    _, used_labels = document_labels(tokenizer, [texts[d] for d in used], proxies)
    labels = dict(zip(used, used_labels))
    classes = torch.stack(
        [labels[d][s : s + context_length] for d, s in zip(windows.doc.tolist(), windows.start.tolist())]
    )
    valid = torch.arange(context_length)[None, :] >= windows.valid_from[:, None]
    return windows, CheckWindows(windows.ids, valid, classes)


def add_token_classes(windows: CheckWindows, class_tokens: Tensor) -> CheckWindows:
    """The windows with one more class per token id of class_tokens (after the hand classes)."""
    return CheckWindows(
        windows.ids, windows.valid, torch.cat([windows.classes, token_classes(windows.ids, class_tokens)], -1)
    )


def class_names(tokenizer, proxies: list[str], class_tokens: Tensor) -> list[str]:
    return [*proxies, *(token_class_name(token_text(tokenizer, [t])) for t in class_tokens.tolist())]


def frequent_class_tokens(windows: CheckWindows, min_tokens: int, max_classes: int) -> Tensor:
    return frequent_tokens(windows.ids[windows.valid], min_tokens, max_classes)


class ModelReader:
    """A model's mlp.{layer}: its activations, and its logits with what the layer reads replaced."""

    def __init__(self, hooked: HookedModel, layer: int):
        self.hooked, self.hook = hooked, f"mlp.{layer}"
        hooked.check_hook(self.hook)
        self.d_mlp, self.device = hooked.d_mlp, hooked.device
        self.layer = layer

    @torch.no_grad()
    def acts(self, windows: CheckWindows, rows: Tensor) -> Tensor:
        """[len(rows), pos, d_mlp] on the device."""
        return self.hooked.run([self.hook], input_ids=windows.ids[rows].to(self.device))[self.hook].float()

    @torch.no_grad()
    def logits(self, windows: CheckWindows, rows: Tensor, reads: Tensor) -> Tensor:
        """[len(rows), pos, vocab] with the layer's output computed from `reads` [len(rows), pos, d_mlp]."""
        ids = windows.ids[rows].to(self.device)
        return self.hooked.run([], input_ids=ids, return_logits=True, edit={self.hook: lambda acts: reads})["logits"]

    @torch.no_grad()
    def readout(self) -> Tensor:
        """[d_mlp, vocab]: W_out @ W_U, the final norm's scale folded in (the direct path to the logits)."""
        return (
            self.hooked.mlp_out_weight(self.layer).detach().float() @ self.hooked.folded_unembedding().detach().float()
        )


def _encode(sae: SparseAutoencoder | None):
    return (lambda acts: acts) if sae is None else sae.encode


def _directions(sae: SparseAutoencoder | None, units: Tensor, d_mlp: int) -> Tensor:
    """[len(units), d_mlp]: the units' decoder rows; a neuron's is its one-hot vector (never the
    [d_mlp, d_mlp] identity)."""
    if sae is None:
        return torch.nn.functional.one_hot(units, d_mlp).float()
    return sae.W_dec.detach()[units]


def ablation_rows(memory: int, context: int, vocab: int, width: int) -> int:
    """Rows (unit, window) per ablation forward so that a forward's logits, their float32 copy for
    the normaliser and the layer's activations, reconstructions and unit activations ([rows,
    context, vocab] and [rows, context, width] float32, width the widest of d_mlp and d_sae) fit in
    `memory` bytes; EVAL_BATCH at most (the evaluation's batch)."""
    return min(EVAL_BATCH, block_rows(memory, 4 * context * (2 * vocab + 3 * width)))


def _reads(reader, windows: CheckWindows, desc: str):
    """Per batch of windows: (its first window, the layer's activations [w, pos, d_mlp], valid bool
    [w, pos], classes bool [w, pos, C])."""
    for b in tqdm(range(0, len(windows), EVAL_BATCH), desc=desc, unit="batch", mininterval=2.0):
        rows = torch.arange(b, min(b + EVAL_BATCH, len(windows)))
        yield b, reader.acts(windows, rows), windows.valid[rows], windows.classes[rows]


@torch.no_grad()
def _unit_maxima(reader, dicts, windows: CheckWindows) -> dict[str, Tensor]:
    maxima = {name: torch.zeros(reader.d_mlp if sae is None else sae.d_sae) for name, sae in dicts.items()}
    for _, acts, valid, _ in _reads(reader, windows, "unit maxima"):
        x = acts[valid.to(acts.device)]
        for name, sae in dicts.items():
            maxima[name] = torch.maximum(maxima[name], _encode(sae)(x).amax(0).cpu())
    return maxima


@torch.no_grad()
def _class_effects(
    reader, sae, windows, rows_window, rows_unit, rows_class, predicted, maxima, share, layer_mean, batch=EVAL_BATCH
):
    """Per row (unit rows_unit[r] with proxy class rows_class[r] on window rows_window[r], sorted by
    window), over the positions of the class where the unit fires: the mean change in log p(the
    class's predicted tokens, predicted [C, P]) when the unit's part (activation x decoder row) is
    removed from the layer's actual activations, the same when the whole layer is mean-ablated (its
    activations replaced by layer_mean [d_mlp], their mean over the check windows), and the number
    of those positions: three [R]. `batch` rows (units of any dictionary) share one forward of each
    kind; one set of logits is alive at a time."""
    (effect, layer_effect), count = torch.full((2, len(rows_unit)), math.nan), torch.zeros(len(rows_unit))
    for b in range(0, len(rows_unit), batch):
        rows = slice(b, b + batch)
        shown, where = rows_window[rows].unique(return_inverse=True)
        acts = reader.acts(windows, shown)
        where, unit = where.to(reader.device), rows_unit[rows].to(reader.device)
        activation = _encode(sae)(acts)[where, :, unit]  # [r, pos]
        on, cls = shown[where.cpu()], rows_class[rows]
        tokens = predicted[cls].to(reader.device)  # [r, P]
        before = class_logprob(reader.logits(windows, shown, acts), tokens, where)
        layer_after = class_logprob(
            reader.logits(windows, shown, layer_mean.to(acts.device).expand_as(acts)), tokens, where
        )
        removed = acts[where] - activation[..., None] * _directions(sae, unit, reader.d_mlp)[:, None, :]
        after = class_logprob(reader.logits(windows, on, removed), tokens)
        counted = firing(activation, maxima[unit.cpu()].to(reader.device)[:, None], share)
        counted &= (windows.valid[on] & windows.classes[on, :, cls]).to(reader.device)
        n = counted.sum(1)
        for out, delta in ((effect, after - before), (layer_effect, layer_after - before)):
            out[rows] = torch.where(n > 0, (delta * counted).sum(1) / n.clamp(min=1), math.nan).cpu()
        count[rows] = n.float().cpu()
    return effect, layer_effect, count


def _downstream(
    reader, sae, windows, top_window, live, best, predicted, maxima, share, layer_mean, batch
) -> tuple[Tensor, Tensor, Tensor]:
    """Per unit [U]: the downstream effect and the whole layer's (_class_effects, `batch` rows per
    forward), position-weighted over its top windows top_window [n, U], and the number of positions;
    NaN for units that are not live, have no proxy or whose class predicts no tokens."""
    n_units = len(best)
    has_tokens = (best >= 0) & (predicted[best.clamp(min=0)] >= 0).any(1)
    unit_ids = torch.arange(n_units)[None, :].expand_as(top_window)
    keep = (top_window >= 0) & (live & has_tokens)[None, :]
    order = top_window[keep].argsort(stable=True)  # rows sorted by window: a batch shares its forwards
    rows_window, rows_unit = top_window[keep][order], unit_ids[keep][order]
    effect, layer_effect, count = _class_effects(
        reader, sae, windows, rows_window, rows_unit, best[rows_unit], predicted, maxima, share, layer_mean, batch
    )
    positions = torch.zeros(n_units).index_add_(0, rows_unit, count)
    means = []
    for values in (effect, layer_effect):
        total = torch.zeros(n_units).index_add_(0, rows_unit, values.nan_to_num(0.0) * count)
        means.append(torch.where(positions > 0, total / positions, math.nan))
    return means[0], means[1], positions


def downstream_sample(
    live: Tensor, best: Tensor, selection_f1: Tensor, n: int | None, seed: int, shown: list[int] = ()
) -> tuple[Tensor, Tensor]:
    """(sampled, measured) bool [U]: which units get the downstream check, whose cost is forwards
    with logits per unit. n None: every live unit, both. Otherwise `sampled` is a uniform seeded
    sample of n live units, over which the downstream pass rates are estimated (Wilson intervals
    over the sample), and `measured` adds, for each class in `shown`, the live units with its best
    selection F1 (best [U] each unit's class, -1 none): the units a report shows for those classes."""
    if n is None or n >= int(live.sum()):
        return live.clone(), live.clone()
    candidates = torch.nonzero(live).flatten()
    pick = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))[:n]
    sampled = torch.zeros_like(live).index_fill_(0, candidates[pick], True)
    in_shown = torch.isin(best, torch.tensor(list(shown), dtype=best.dtype)) & live
    f1 = torch.where(in_shown, selection_f1, -math.inf)
    class_best = torch.full((int(best.max()) + 1,), -math.inf).scatter_reduce(0, best.clamp(min=0), f1, "amax")
    return sampled, sampled | (in_shown & (f1 == class_best[best.clamp(min=0)]))


@dataclass
class DictionaryChecks:
    """What check_dictionaries found: one table per dictionary, each SAE's Pearson r with the neurons
    {"{name}.neurons": [d_sae, d_mlp]}, each class's tokens in the check windows."""

    tables: dict[str, pd.DataFrame]
    correlations: dict[str, Tensor]
    class_tokens: list[int]


def class_predictions(selection: CheckWindows, vocab: int, n_predicted: int) -> tuple[Tensor, Tensor]:
    """Each class's predicted tokens [C, n_predicted] (-1 padding) on the selection windows, and every
    token's count as a next token there [vocab] (predicted_tokens, next_token_counts)."""
    after_class, after_any = next_token_counts(selection.ids, selection.classes, selection.valid, vocab)
    return predicted_tokens(after_class, after_any, n_predicted), after_any


def check_dictionaries(
    reader,
    dicts: dict[str, SparseAutoencoder | None],
    selection: CheckWindows,
    check: CheckWindows,
    names: list[str],
    predicted: Tensor,
    thresholds: CheckThresholds,
    ablation_windows: int = 2,
    vocab_text=str,
    memory: int = MEMORY,
    downstream_units: int | None = None,
    seed: int = 0,
    shown_classes: list[int] = (),
) -> DictionaryChecks:
    """The checks for every unit of every dictionary of one layer (`dicts`: {name: SAE, or None for
    the neurons}): best proxies and unit maxima from `selection`, everything else from `check`;
    `names` the classes' names, `predicted` [C, P] their predicted tokens (class_predictions);
    vocab_text(id) -> a token's text. `memory`: bytes of one block of the chunked products and of
    one ablation forward's tensors (checks.MEMORY), so that memory grows linearly with d_sae: no
    [d_sae, d_sae] or [units, vocab] tensor is built, and the activations are read a batch at a time
    (an SAE's nonzeros are kept for universality). `downstream_units`: measure the downstream
    effect (forwards with logits for every unit) on a seeded sample of that many live units per
    dictionary, and on the best units of `shown_classes`, see downstream_sample (None: all)."""
    t = thresholds
    maxima = _unit_maxima(reader, dicts, selection)
    readout = reader.readout()  # [d_mlp, vocab]: the direct path to the logits
    n_classes = selection.classes.shape[-1]
    chosen = {name: ProxySelection(maxima[name], n_classes, t.fire_share) for name in dicts}
    with torch.no_grad():
        for _, acts, valid, classes in _reads(reader, selection, "proxy selection"):
            x = acts[valid.to(acts.device)]
            for name, sae in dicts.items():
                chosen[name].update(_encode(sae)(x), classes[valid])
    best, selection_f1 = {}, {}
    for name, s in chosen.items():
        best[name], selection_f1[name] = s.best()
    others = {name: other_run(name) for name in dicts if name != NEURONS and other_run(name) in dicts}
    scores = {
        name: ProxyScores(maxima[name], best[name], n_classes, t.fire_share, ablation_windows, name == NEURONS)
        for name in dicts
    }
    correlations = {name: Correlations(sae.d_sae, reader.d_mlp) for name, sae in dicts.items() if sae is not None}
    codes = {name: SparseCodes(sae.d_sae) for name, sae in dicts.items() if name in {*others, *others.values()}}
    layer_sum = torch.zeros(reader.d_mlp, dtype=torch.float64)
    with torch.no_grad():
        for b, acts, valid, classes in _reads(reader, check, "checks"):
            units = {name: _encode(sae)(acts) for name, sae in dicts.items()}
            for name in dicts:
                scores[name].update(units[name], classes, valid, b)
            flat = {name: u[valid.to(u.device)] for name, u in units.items()}
            x = acts[valid.to(acts.device)]
            layer_sum += x.double().sum(0).cpu()
            for name, acc in correlations.items():
                acc.update(flat[name], x)
            for name, acc in codes.items():
                acc.update(flat[name])
    layer_mean = (layer_sum / check.valid.sum()).float()
    neuron_specific = scores[NEURONS].specific_classes(t) if NEURONS in dicts else None
    neuron_r = {name: acc.result(memory) for name, acc in correlations.items()}
    del correlations  # their float64 sums
    width = max(reader.d_mlp, *(len(m) for m in maxima.values()))
    batch = ablation_rows(memory, check.ids.shape[1], readout.shape[1], width)
    tables = {}
    for name, sae in dicts.items():
        directions = None if sae is None else sae.W_dec.detach()
        score = scores[name].scores()
        mine = best[name]
        tokens = torch.where((mine >= 0)[:, None], predicted[mine.clamp(min=0)], -1)  # [U, P]
        live = score["fires"] > 0
        sampled, measured = downstream_sample(live, mine, selection_f1[name], downstream_units, seed, shown_classes)
        downstream, layer_downstream, positions = _downstream(
            reader,
            sae,
            check,
            scores[name].top_window,
            measured,
            mine,
            predicted,
            maxima[name],
            t.fire_share,
            layer_mean,
            batch,
        )
        downstream_share = torch.where(layer_downstream < 0, downstream / layer_downstream, math.nan)
        top_ids, top_w, bottom_ids, bottom_w, logit_share = logit_scores(directions, readout, tokens)
        frame = pd.DataFrame(
            {
                "unit": torch.arange(len(mine)).numpy(),
                "live": live.numpy(),
                "density": score["density"].numpy(),
                "fires": score["fires"].numpy(),
                "max": maxima[name].numpy(),
                "best_proxy": [names[i] if i >= 0 else None for i in mine.tolist()],
                "selection_f1": selection_f1[name].numpy(),
                "precision": score["precision"].numpy(),
                "base_rate": score["base_rate"].numpy(),
                "lift": score["lift"].numpy(),
                "recall": score["recall"].numpy(),
                "llr": score["llr"].numpy(),
                "predicted": [[vocab_text(i) for i in row if i >= 0] for row in tokens[:, :5].tolist()],
                "downstream": downstream.numpy(),
                "layer_downstream": layer_downstream.numpy(),
                "downstream_share": downstream_share.numpy(),
                "downstream_positions": positions.numpy(),
                "downstream_sampled": sampled.numpy(),
                "logit_share": logit_share.numpy(),
                "top_logits": [[vocab_text(i) for i in row] for row in top_ids.tolist()],
                "top_logit_weights": top_w.tolist(),
                "bottom_logits": [[vocab_text(i) for i in row] for row in bottom_ids.tolist()],
                "bottom_logit_weights": bottom_w.tolist(),
            }
        )
        values = {
            "precision": score["precision"],
            "lift": score["lift"],
            "recall": score["recall"],
            "downstream": downstream,
            "layer_downstream": layer_downstream,
            "downstream_share": downstream_share,
            "universality": torch.full((len(mine),), math.nan),
        }
        if name in neuron_r:
            best_neuron, best_r = best_match(neuron_r[name].abs())
            top_neuron, top_share = decoder_neuron_share(directions.cpu())
            frame["best_neuron"], frame["neuron_corr"] = best_neuron.numpy(), best_r.numpy()
            frame["decoder_top_neuron"], frame["decoder_top_share"] = top_neuron.numpy(), top_share.numpy()
        if neuron_specific is not None and sae is not None:
            values["neuron_specific"] = (mine >= 0) & neuron_specific[mine.clamp(min=0)]
            frame["neuron_specific"] = values["neuron_specific"].numpy()
        if name in others:
            match, values["universality"] = best_correlations(codes[name], codes[others[name]], memory)
            cos_match, cos = best_dot(directions, dicts[others[name]].W_dec.detach(), memory)
            frame["other_unit"], frame["other_corr"] = match.numpy(), values["universality"].numpy()
            frame["other_decoder_unit"], frame["other_decoder_cos"] = cos_match.numpy(), cos.numpy()
        frame["hist_in_proxy"] = scores[name].hist_in.float().tolist()
        frame["hist_all"] = scores[name].hist_all.float().tolist()
        verdicts = passes(values, t)
        for c in CHECKS:
            frame[f"pass_{c}"] = (verdicts[c] & live).numpy()
        applicable = [c for c in CHECKS if not (sae is None and c in SAE_ONLY)]
        frame["pass_all"] = frame[[f"pass_{c}" for c in applicable]].all(axis=1)
        tables[name] = frame
    class_tokens = scores[next(iter(dicts))].class_count.long().tolist()
    return DictionaryChecks(tables, {f"{name}.neurons": r for name, r in neuron_r.items()}, class_tokens)
