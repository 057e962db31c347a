"""Rules of workflow/rules/sae.smk: SAE training and evaluation, the per-feature checks on every
dictionary (SAE runs, neurons, untrained-twin and random-decoder controls), feature pages and the
report's "Sparse autoencoder features" pieces.

Folders: results/sae/{model}/L{layer}/{run}/ holds one SAE in SAELens's layout (cfg.json,
sae_weights.safetensors) with training_log.json and evaluation.json; .../checks/ holds one parquet
table per dictionary, the scan of every dictionary's units (the scan machinery, one more hook
each) and the neuron x feature correlations the neuron pages read.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..corpus import load_corpus
from ..hooks import HookedModel
from ..io import atomic_path, read_json, write_json, write_provenance
from ..models import load_model, resolve_device
from ..proxies import document_labels
from ..report.pages import CSS, dataset_page, feature_checks_section
from ..sae import (
    ReconstructionStats,
    SAEConfig,
    SAEError,
    SparseAutoencoder,
    from_sae_lens_files,
    loss_recovered,
    sae_lens_files,
    train_sae,
)
from ..sae_checks import (
    CHECKS,
    CheckAccumulator,
    CheckThresholds,
    ablation_effects,
    best_match,
    decoder_neuron_share,
    logit_weights,
    next_token_logprobs,
    passes,
    target_logprobs,
)
from ..scan import DerivedHook, ScanConfig, Windows, load_scan, make_windows, scan_meta
from ..scan import scan as run_scan
from .scans import write_scan

NEURONS = "neurons"  # the dictionary of the layer's neurons
EVAL_BATCH = 16  # windows per forward in evaluation and checks


def run_config(run: str, params: dict) -> SAEConfig:
    """The SAEConfig of a run name: "A", "B", ... (seeds in order), "relu-A" (ReLU + L1),
    "random-A", ... (decoder frozen at random unit directions)."""
    kind, _, letter = run.rpartition("-")
    seed = params["seeds"][ord(letter) - ord("A")]
    return SAEConfig(
        architecture="relu" if kind == "relu" else params["architecture"],
        expansion=params["expansion"],
        k=params["k"],
        lr=params["lr"],
        batch_size=params["batch_size"],
        tokens=params["tokens"],
        dead_tokens=params["dead_tokens"],
        max_dead_share=params["max_dead_share"],
        frozen_decoder=kind == "random",
        seed=seed,
    )


def other_run(run: str) -> str:
    """The run a run's universality is measured against: A <-> B, random-A <-> random-B; for a
    third seed C, A."""
    kind, dash, letter = run.rpartition("-")
    return f"{kind}{dash}{'B' if letter == 'A' else 'A'}"


def save_sae(out_dir: Path, sae: SparseAutoencoder, hook: str, model: str, extra: dict) -> None:
    cfg, tensors = sae_lens_files(sae, hook, {"model_name": model, **extra})
    write_json(out_dir / "cfg.json", cfg)
    save_file(tensors, str(out_dir / "sae_weights.safetensors"))


def load_sae(path: str | Path, model: HookedModel | None = None) -> tuple[SparseAutoencoder, str]:
    """(the SAE of a SAELens-layout folder, its hook name); with `model`, refuse one whose hook or
    d_in does not fit that model (SAEError, one line)."""
    path = Path(path)
    if not (path / "cfg.json").is_file() or not (path / "sae_weights.safetensors").is_file():
        raise SAEError(f"{str(path)!r} is not an SAE folder (cfg.json and sae_weights.safetensors)")
    cfg = read_json(path / "cfg.json")
    sae = from_sae_lens_files(cfg, load_file(str(path / "sae_weights.safetensors")))
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
    if model is not None:
        try:
            kind, layer = model.check_hook(hook)
        except (ValueError, TypeError) as err:
            raise SAEError(f"SAE {str(path)!r}: its hook {hook!r} does not fit this model: {err}") from None
        width = model.d_mlp if kind in ("mlp", "mlp_pre") else model.d_model
        if sae.d_in != width:
            raise SAEError(f"SAE {str(path)!r} reads {sae.d_in} dimensions, but {hook} of this model has {width}")
    return sae, hook


def _windows(tokenizer, texts: list[str], context_length: int, max_tokens: int) -> Windows:
    docs = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return make_windows(docs, context_length, max_tokens)


def _valid(windows: Windows, rows: slice, context_length: int) -> torch.Tensor:
    """bool [rows, pos]: the positions these windows count (not the context-only ones)."""
    return torch.arange(context_length)[None, :] >= windows.valid_from[rows, None]


@torch.no_grad()
def collect_activations(model: HookedModel, hook: str, windows: Windows, batch_size: int = 64) -> torch.Tensor:
    """The activations at `hook` of every counted token of `windows`: float16 [tokens, width],
    one forward per batch that stops after the hook's block."""
    out = []
    context = windows.ids.shape[1]
    for b in tqdm(range(0, len(windows.ids), batch_size), desc=f"activations {hook}", unit="batch", mininterval=2.0):
        rows = slice(b, b + batch_size)
        acts = model.run([hook], input_ids=windows.ids[rows].to(model.device))[hook]
        out.append(acts[_valid(windows, rows, context).to(acts.device)].half().cpu())
    return torch.cat(out)


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
        valid = _valid(windows, rows, context).to(model.device)
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
    train_windows = _windows(tok, list(corpus["train"]["text"]), context_length, cfg.tokens)
    acts = collect_activations(hooked, hook, train_windows)
    sae, log = train_sae(acts, cfg, hooked.device, desc=f"sae {model} L{layer} {run}")
    del acts
    heldout = _windows(tok, list(corpus["heldout"]["text"]), context_length, sae_params["check_tokens"])
    evaluation = evaluate_sae(hooked, sae, layer, heldout)
    with atomic_path(out_dir, directory=True) as tmp:
        save_sae(tmp, sae, hook, model, {"run": run, "training": vars(cfg)})
        write_json(tmp / "training_log.json", log)
        write_json(tmp / "evaluation.json", {"model": model, "layer": layer, "run": run, **evaluation})
        write_provenance(tmp, config, cfg.seed, model=model, layer=layer, run=run)


def _labelled_windows(tokenizer, texts: list[str], proxies: list[str], context_length: int, max_tokens: int):
    """Held-out windows and their proxy labels bool [windows, pos, classes]."""
    windows = _windows(tokenizer, texts, context_length, max_tokens)
    used = windows.doc.unique().tolist()  # label only the documents the token budget reaches
    _, used_labels = document_labels(tokenizer, [texts[d] for d in used], proxies)
    labels = dict(zip(used, used_labels))
    window_labels = torch.stack(
        [labels[d][s : s + context_length] for d, s in zip(windows.doc.tolist(), windows.start.tolist())]
    )
    return windows, window_labels


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


def _encode(sae: SparseAutoencoder | None):
    return (lambda acts: acts) if sae is None else sae.encode


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
    hook = f"mlp.{layer}"
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    dicts = _dictionaries(run_dirs, hooked, with_neurons)
    heldout = load_corpus(corpus_dir)["heldout"]
    proxies = sae_params["proxies"]
    windows, labels = _labelled_windows(tok, list(heldout["text"]), proxies, context_length, sae_params["check_tokens"])
    width = {name: hooked.d_mlp if sae is None else sae.d_sae for name, sae in dicts.items()}
    derived = {name: DerivedHook(hook, _encode(sae), width[name]) for name, sae in dicts.items()}
    scan_cfg = ScanConfig(context_length=context_length, kinds=[], batch_size=EVAL_BATCH, seed=seed)
    result, window_max = run_scan(hooked, windows, scan_cfg, desc=f"scan {model} dictionaries", derived=derived)
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
            valid = _valid(windows, rows, context)
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
            sae_params,
        )
    with atomic_path(out_dir, directory=True) as tmp:
        meta = scan_meta(model, model_dir, hooked, scan_cfg, windows, list(heldout["doc_id"]), derived=list(dicts))
        write_scan(tmp / "scan", result, windows, meta, window_max)
        for name, table in tables.items():
            table.to_parquet(tmp / f"{name}.parquet")
        correlations = {
            f"{name}.neurons": accumulators[name].correlation("neurons").contiguous()
            for name, sae in dicts.items()
            if sae is not None
        }
        save_file(correlations, str(tmp / "neuron_correlations.safetensors"))
        write_json(
            tmp / "proxies.json",
            {"proxies": proxies, "class_tokens": accumulators[next(iter(dicts))].class_count.tolist()},
        )
        write_provenance(tmp, config, seed, model=model, layer=layer, dictionaries=list(dicts))


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
            "top_logits": [[tok.decode([t]) for t in row] for row in top_ids.tolist()],
            "top_logit_weights": top_w.tolist(),
            "bottom_logits": [[tok.decode([t]) for t in row] for row in bottom_ids.tolist()],
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


def read_checks(checks_dir: str | Path) -> dict[str, pd.DataFrame]:
    """{dictionary name: its check table} of a checks folder."""
    return {p.stem: pd.read_parquet(p) for p in sorted(Path(checks_dir).glob("*.parquet"))}


@dataclass(frozen=True)
class FeatureUnit:
    """An SAE feature as the page builder addresses a unit."""

    run: str
    layer: int
    index: int

    @property
    def hook(self) -> str:
        return self.run

    @property
    def name(self) -> str:
        return f"F{self.index}"


def page_features(table: pd.DataFrame, n_pages: int, specificity: float) -> list[int]:
    """The features that get pages: passing all checks, then proxy-matched (precision at least the
    specificity threshold), then the highest max activation; live ones only."""
    live = table[table["live"]]
    order = [
        live[live["pass_all"]],
        live[live["precision"] >= specificity].sort_values("f1", ascending=False),
        live.sort_values("max", ascending=False),
    ]
    return list(dict.fromkeys(int(u) for part in order for u in part["unit"]))[:n_pages]


def sae_pages(
    *,
    model_dir: str,
    run_dir: str,
    checks_dir: str,
    out_dir: str,
    model: str,
    layer: str,
    n_pages: int,
    thresholds: dict,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """Feature pages of run A with the neuron pages' builder (examples coloured by feature
    activation, histogram, logit weights), plus its checks, correlated neuron and the other run's
    match; and an index."""
    layer = int(layer)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    sae, hook = load_sae(run_dir, hooked)
    sae = sae.to(hooked.device)
    run = Path(run_dir).name
    table = read_checks(checks_dir)[run].set_index("unit")
    scan = load_scan(Path(checks_dir) / "scan", model_dir=model_dir)
    chosen = page_features(table.reset_index(), n_pages, thresholds["specificity"])
    windows: dict[int, list[int]] = {}
    for u in chosen:
        shown = (
            scan.tensor(run, "top_window")[:, u].tolist()
            + scan.tensor(run, "interval_window")[:, :, u].flatten().tolist()
        )
        windows[u] = sorted({w for w in shown if w >= 0} | set(scan.random_windows.tolist()))
    needed = sorted({w for ws in windows.values() for w in ws})
    row_of = {w: i for i, w in enumerate(needed)}
    acts = []
    with torch.no_grad():
        for b in range(0, len(needed), 64):
            x = hooked.run([hook], input_ids=scan.windows.ids[needed[b : b + 64]].to(hooked.device))[hook]
            acts.append(sae.encode(x.float())[..., chosen].cpu())
    acts = torch.cat(acts) if acts else torch.zeros(0)
    w_u = hooked.folded_unembedding().detach().cpu()
    top_ids, top_w, bottom_ids, bottom_w = logit_weights(
        sae.W_dec[chosen].cpu(), hooked.mlp_out_weight(layer).detach().cpu(), w_u
    )
    pages, rows = {}, []
    for j, u in enumerate(chosen):
        unit = FeatureUnit(run, layer, u)
        row = table.loc[u].to_dict()
        token_acts = {w: acts[row_of[w], :, j] for w in windows[u]}
        logit = (
            list(zip(top_ids[j].tolist(), top_w[j].tolist())),
            list(zip(bottom_ids[j].tolist(), bottom_w[j].tolist()))[:5],
        )
        nav = {
            "prev": f"F{chosen[j - 1]}.html" if j else None,
            "next": f"F{chosen[j + 1]}.html" if j + 1 < len(chosen) else None,
        }
        heading = f"{model} · mlp.{layer} SAE run {run} · feature {u}"
        page = dataset_page(model, unit, scan, tok, token_acts, logit, nav, [], None, heading=heading)
        page.sections[1].title = "Logit weights (W_dec · W_out · W_U, the final norm's scale folded in)"
        page.add("Checks (seed 004's detailed investigation)", feature_checks_section(row, thresholds))
        if "neuron_corr" in row:
            page.add(
                "Not a neuron; universality",
                f"<p>Most correlated neuron: L{layer}N{int(row['best_neuron'])} (|r| = {row['neuron_corr']:.3f}); "
                f"{100 * row['decoder_top_share']:.1f}% of the decoder row's L1 mass is on its largest neuron "
                f"(L{layer}N{int(row['decoder_top_neuron'])}).</p>"
                + (
                    f"<p>Other run: feature {int(row['other_unit'])} by activation (r = {row['other_corr']:.3f}), "
                    f"feature {int(row['other_decoder_unit'])} by decoder direction "
                    f"(cos = {row['other_decoder_cos']:.3f}).</p>"
                    if "other_corr" in row
                    else ""
                ),
            )
        pages[f"F{u}.html"] = page.html()
        rows.append((u, row))
    pages["index.html"] = _feature_index(model, run, layer, rows)
    with atomic_path(out_dir, directory=True) as tmp:
        for name, text in pages.items():
            (tmp / run).mkdir(exist_ok=True)
            (tmp / run / name).write_text(text, encoding="utf-8")
        write_json(tmp / "pages.json", {run: chosen})
        write_provenance(tmp, config, seed, model=model, layer=layer, n_pages=len(chosen))


def _feature_index(model: str, run: str, layer: int, rows: list[tuple[int, dict]]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("feature", "max", "density", "best proxy", "precision", "recall", *CHECKS))
    body = "".join(
        f'<tr><td><a href="F{u}.html">F{u}</a></td><td>{r["max"]:.3f}</td><td>{r["density"]:.4f}</td>'
        f"<td>{html.escape(str(r['best_proxy']))}</td><td>{r['precision']:.2f}</td><td>{r['recall']:.2f}</td>"
        + "".join(f"<td>{'✓' if r[f'pass_{c}'] else '·'}</td>" for c in CHECKS)
        + "</tr>"
        for u, r in rows
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{model} SAE {run}</title>
<style>{CSS} td{{padding:.1rem .6rem}}</style></head><body>
<h1>{html.escape(model)} · mlp.{layer} SAE run {run}: feature pages</h1>
<table><tr>{head}</tr>{body}</table></body></html>"""


def sae_summary(
    *,
    run_dirs: list[str],
    checks_dirs: list[str],
    pages: str,
    evaluation: str,
    scatter: str,
    specificity: str,
    section: str,
    model: str,
    twin: str | None,
    sae_params: dict,
    seed: int,
) -> None:
    """The report's "Sparse autoencoder features" pieces: evaluation.csv, the universality scatter,
    the specificity histograms and summary.md."""
    # imported here: matplotlib and seaborn cost every training and checks job about a second
    from ..report.sae import evaluation_table, matched_features, sae_section, specificity_figure, universality_figure

    evaluations = [read_json(Path(d) / "evaluation.json") for d in run_dirs]
    checks = {}
    for path in checks_dirs:
        owner = read_json(Path(path) / "provenance.json")["model"]
        checks |= {(owner, name): table for name, table in read_checks(path).items()}
    layer = sae_params["layer"]
    page_links = {u: f"../sae/{model}/L{layer}/pages/A/F{u}.html" for u in read_json(Path(pages) / "pages.json")["A"]}
    proxies = read_json(Path(checks_dirs[0]) / "proxies.json")
    class_tokens = dict(zip(proxies["proxies"], proxies["class_tokens"]))
    panels = [(model, "A", f"SAE A of {model}")]
    if (model, "random-A") in checks:
        panels.append((model, "random-A", "random-decoder SAE A"))
    if twin and (twin, "A") in checks:
        panels.append((twin, "A", f"SAE A of {twin}"))
    with atomic_path(evaluation) as tmp:
        evaluation_table(evaluations).to_csv(tmp, index=False)
    universality_figure(checks, panels, sae_params["thresholds"], scatter)
    specificity_figure(matched_features(checks[(model, "A")]), specificity)
    figures = {"scatter": "sae/universality.png", "specificity": "sae/specificity.png"}
    sae_section(evaluations, checks, model, twin, sae_params, class_tokens, page_links, figures, section)
