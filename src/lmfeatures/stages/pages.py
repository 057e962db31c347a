"""Rules of workflow/rules/pages.smk: the neuron pages, where the stages meet, and the SAE feature
pages. Each selected neuron's page has its dataset sections (from the scan) and, where those stages
ran on it, its EPO prompts, its minimal activating examples and variants and its most correlated
SAE features."""

from __future__ import annotations

from pathlib import Path

import torch

from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import resolve_device
from lmfeatures.report.pages import (
    FeatureUnit,
    correlated_features_section,
    dataset_page,
    epo_section,
    feature_checks_section,
    feature_index_page,
    feature_match_section,
    index_page,
    page_features,
    page_name,
    pruning_page_section,
)
from lmfeatures.sae.checks import logit_scores
from lmfeatures.sae.dictionary_checks import ModelReader
from lmfeatures.scan.neurons import Neuron, direct_logit_effect, token_activations
from lmfeatures.store.epo import read_frontier
from lmfeatures.store.models import load_model
from lmfeatures.store.neurons import write_pages
from lmfeatures.store.prune import read_evaluation, read_table
from lmfeatures.store.sae import load_checks_scan, load_sae, read_checks, read_correlations, read_paged
from lmfeatures.store.sae import write_pages as write_feature_pages
from lmfeatures.store.scans import load_scan
from lmfeatures.store.selection import read_selection


def _other_stages(prune_dir: list[str], epo_runs: list[str]) -> tuple[dict, dict, dict]:
    """What the later stages found, by neuron: (pruning evaluations, pruning tables' folder, EPO
    frontier prompts of every seed, each with its "seed")."""
    evaluations, folder = {}, {}
    for path in prune_dir:
        for r in read_evaluation(path)["neurons"]:
            evaluations[Neuron.from_name(r["neuron"])] = r
            folder[Neuron.from_name(r["neuron"])] = path
    frontiers: dict[Neuron, list[dict]] = {}
    for run in epo_runs:
        record = read_frontier(run)
        prompts = [{**p, "seed": record["seed"]} for p in record["frontier"]]
        frontiers.setdefault(Neuron.from_name(record["neuron"]), []).extend(prompts)
    return evaluations, folder, frontiers


def _correlated_features(
    sae_checks: list[str], sae_pages: list[str], sae_layer: int, chosen: list[Neuron], top: int = 8
) -> dict:
    """{neuron of the SAE's layer: [(feature, Pearson r, link to its page or None)]}, the `top` by |r|."""
    if not sae_checks:
        return {}
    checks = Path(sae_checks[0])
    corr = read_correlations(checks, "A")  # [d_sae, d_mlp]
    paged = set(read_paged(sae_pages[0], "A"))
    folder = (
        f"../../sae/{checks.parent.parent.name}/{checks.parent.name}/pages/A"  # checks: sae/{model}/L{layer}/checks
    )
    found = {}
    for n in chosen:
        if n.layer == sae_layer:
            r = corr[:, n.index]
            best = r.abs().topk(min(top, len(r))).indices.tolist()
            found[n] = [(f, float(r[f]), f"{folder}/F{f}.html" if f in paged else None) for f in best]
    return found


def neuron_pages(
    *,
    model_dir: str,
    scan_dir: str,
    selection_json: str,
    out_dir: str,
    prune_dir: list[str],
    epo_runs: list[str],
    sae_checks: list[str],
    sae_pages: list[str],
    model: str,
    partner: str | None,
    sae_layer: int,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """One page per neuron of the selection's `pages`, with the sections of pruning (`prune_dir`: []
    or the model's prune folder), EPO (`epo_runs`: its EPO run folders) and the SAE stage
    (`sae_checks`, `sae_pages`: [] or the folders of the SAE at layer `sae_layer`) where they ran on
    it; and an index. `partner`: the untrained twin or the trained model, whose pages are linked."""
    scan = load_scan(scan_dir, model_dir=model_dir)
    selection = read_selection(selection_json)
    pruned, pruned_in, frontiers = _other_stages(prune_dir, epo_runs)
    rows = selection["pages"]
    chosen = [Neuron.from_name(r["neuron"]) for r in rows]
    partner_chosen = {Neuron.from_name(n) for n in selection["partner_pages"]}
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    # every window any page shows, one forward per batch up to the deepest selected layer
    windows: dict[Neuron, list[int]] = {}
    for n in chosen:
        shown = scan.tensor(n.hook, "top_window")[:, n.index].tolist()
        shown += scan.tensor(n.hook, "interval_window")[:, :, n.index].flatten().tolist()
        windows[n] = sorted({w for w in shown if w >= 0} | set(scan.random_windows.tolist()))
    needed = sorted({w for ws in windows.values() for w in ws})
    row_of = {w: i for i, w in enumerate(needed)}
    acts = token_activations(hooked, scan.windows.ids[needed], list(chosen))
    chosen_set = set(chosen)
    correlated = _correlated_features(sae_checks, sae_pages, sae_layer, chosen)
    pages = {}
    for i, n in enumerate(chosen):
        same = []
        for layer in range(scan.meta["n_layers"]):
            unit_max = scan.tensor(f"mlp.{layer}", "max")
            other = Neuron(layer, n.index)
            mx = float(unit_max[n.index]) if n.index < unit_max.numel() else float("nan")
            same.append((layer, mx, page_name(other) if other in chosen_set else None))
        twin = None
        if partner is not None:
            twin = (partner, f"../{partner}/{page_name(n)}" if n in partner_chosen else None)
        nav = {
            "prev": page_name(chosen[i - 1]) if i > 0 else None,
            "next": page_name(chosen[i + 1]) if i + 1 < len(chosen) else None,
        }
        token_acts = {w: acts[n][row_of[w]] for w in windows[n]}
        page = dataset_page(model, n, scan, tok, token_acts, direct_logit_effect(hooked, n), nav, same, twin)
        if n in frontiers:
            page.add("EPO: prompts optimised for this neuron", epo_section(frontiers[n], rows[i]["max"]))
        if n in pruned:
            frame = read_table(pruned_in[n], n.name)
            page.add("Minimal activating examples and variants", pruning_page_section(frame, pruned[n]))
        if n in correlated:
            page.add("Most correlated SAE features (run A)", correlated_features_section(correlated[n]))
        pages[page_name(n)] = page.html()
    pages["index.html"] = index_page(
        model, [(n, r["max"], r["token_concentration"], r["mode_token"]) for n, r in zip(chosen, rows)]
    )
    with atomic_path(out_dir, directory=True) as tmp:
        write_pages(tmp, pages)
        write_provenance(tmp, config, seed, model=model, n_pages=len(rows))


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
    scan = load_checks_scan(checks_dir, model_dir)
    chosen = page_features(table.reset_index(), n_pages)
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
    readout = ModelReader(hooked, layer).readout()
    top_ids, top_w, bottom_ids, bottom_w, _ = logit_scores(sae.W_dec[chosen].detach(), readout)
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
            page.add("Not a neuron; universality", feature_match_section(row, layer))
        pages[f"F{u}.html"] = page.html()
        rows.append((u, row))
    pages["index.html"] = feature_index_page(model, run, layer, rows)
    with atomic_path(out_dir, directory=True) as tmp:
        write_feature_pages(tmp, run, pages, chosen)
        write_provenance(tmp, config, seed, model=model, layer=layer, n_pages=len(chosen))
