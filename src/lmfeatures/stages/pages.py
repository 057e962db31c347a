"""Rule of workflow/rules/pages.smk: the neuron pages, where the stages meet. Each selected neuron's
page has its dataset sections (from the scan) and, where those stages ran on it, its EPO prompts and
its minimal activating examples and variants."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from ..hooks import HookedModel
from ..io import atomic_path, read_json, write_json, write_provenance
from ..models import load_model, resolve_device
from ..neurons import Neuron, NeuronSpec, direct_logit_effect, resolve_neurons, token_activations, token_concentration
from ..report.pages import (
    correlated_features_section,
    dataset_page,
    epo_section,
    index_page,
    page_name,
    pruning_page_section,
)
from ..scan import Scan, load_scan


def _selections(
    scan: Scan, spec: NeuronSpec, partner: dict | None, extra: list[Neuron]
) -> tuple[list[Neuron], set[Neuron]]:
    """(this model's pages, the partner's pages): a twin pages every neuron its trained model pages,
    so the links between the two resolve; `extra` (neurons other stages ran on) are paged too."""
    if partner is None:
        return resolve_neurons(scan, spec, extra=extra), set()
    if partner["role"] == "twin":  # we are the trained model
        chosen = resolve_neurons(scan, spec, extra=extra)
        return chosen, set(resolve_neurons(load_scan(partner["scan"]), spec, extra=chosen))
    trained = resolve_neurons(load_scan(partner["scan"]), spec)  # we are the twin
    return resolve_neurons(scan, spec, extra=trained + extra), set(trained)


def _other_stages(prune_dir: list[str], epo_runs: list[str]) -> tuple[dict, dict, dict]:
    """What the later stages found, by neuron: (pruning evaluations, pruning tables' folder, EPO
    frontier prompts of every seed, each with its "seed")."""
    evaluations, folder = {}, {}
    for path in prune_dir:
        for r in read_json(Path(path) / "evaluation.json")["neurons"]:
            evaluations[Neuron.from_name(r["neuron"])] = r
            folder[Neuron.from_name(r["neuron"])] = Path(path)
    frontiers: dict[Neuron, list[dict]] = {}
    for run in epo_runs:
        record = read_json(Path(run) / "frontier.json")
        prompts = [{**p, "seed": record["seed"]} for p in record["frontier"]]
        frontiers.setdefault(Neuron.from_name(record["neuron"]), []).extend(prompts)
    return evaluations, folder, frontiers


def _correlated_features(sae_checks: list[str], sae_pages: list[str], chosen: list[Neuron], top: int = 8):
    """{neuron of the SAE's layer: [(feature, Pearson r, link to its page or None)]}, the `top` by |r|."""
    if not sae_checks:
        return {}
    checks, pages = Path(sae_checks[0]), Path(sae_pages[0])
    layer = read_json(checks / "provenance.json")["layer"]
    corr = load_file(str(checks / "neuron_correlations.safetensors"))["A.neurons"]  # [d_sae, d_mlp]
    paged = set(read_json(pages / "pages.json")["A"])
    folder = (
        f"../../sae/{checks.parent.parent.name}/{checks.parent.name}/pages/A"  # checks: sae/{model}/L{layer}/checks
    )
    found = {}
    for n in chosen:
        if n.layer == layer:
            r = corr[:, n.index]
            best = r.abs().topk(min(top, len(r))).indices.tolist()
            found[n] = [(f, float(r[f]), f"{folder}/F{f}.html" if f in paged else None) for f in best]
    return found


def neuron_pages(
    *,
    model_dir: str,
    scan_dir: str,
    out_dir: str,
    prune_dir: list[str],
    epo_runs: list[str],
    sae_checks: list[str],
    sae_pages: list[str],
    model: str,
    selection: dict,
    partner: dict | None,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """One page per selected neuron, and per neuron pruning (`prune_dir`: [] or the model's prune
    folder) or EPO (`epo_runs`: its EPO run folders) ran on, with their sections; and an index.
    `partner` = {"name", "scan", "role"} of the untrained twin (role "twin") or of the trained
    model (role "trained")."""
    scan = load_scan(scan_dir, model_dir=model_dir)
    pruned, pruned_in, frontiers = _other_stages(prune_dir, epo_runs)
    extra = sorted(set(pruned) | set(frontiers))
    chosen, partner_chosen = _selections(scan, NeuronSpec(**selection, seed=seed), partner, extra)
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
    correlated = _correlated_features(sae_checks, sae_pages, chosen)
    pages, rows = {}, []
    concentration = {h: token_concentration(scan, h) for h in {n.hook for n in chosen}}  # once per layer
    for i, n in enumerate(chosen):
        share, mode = concentration[n.hook]
        same = []
        for layer in range(scan.meta["n_layers"]):
            unit_max = scan.tensor(f"mlp.{layer}", "max")
            other = Neuron(layer, n.index)
            mx = float(unit_max[n.index]) if n.index < unit_max.numel() else float("nan")
            same.append((layer, mx, page_name(other) if other in chosen_set else None))
        twin = None
        if partner is not None:
            twin = (partner["name"], f"../{partner['name']}/{page_name(n)}" if n in partner_chosen else None)
        nav = {
            "prev": page_name(chosen[i - 1]) if i > 0 else None,
            "next": page_name(chosen[i + 1]) if i + 1 < len(chosen) else None,
        }
        token_acts = {w: acts[n][row_of[w]] for w in windows[n]}
        page = dataset_page(model, n, scan, tok, token_acts, direct_logit_effect(hooked, n), nav, same, twin)
        unit_max = float(scan.tensor(n.hook, "max")[n.index])
        if n in frontiers:
            page.add("EPO: prompts optimised for this neuron", epo_section(frontiers[n], unit_max))
        if n in pruned:
            frame = pd.read_parquet(pruned_in[n] / f"{n.name}.parquet")
            page.add("Minimal activating examples and variants", pruning_page_section(frame, pruned[n]))
        if n in correlated:
            page.add("Most correlated SAE features (run A)", correlated_features_section(correlated[n]))
        pages[page_name(n)] = page.html()
        rows.append((n, unit_max, float(share[n.index]), tok.decode([int(mode[n.index])])))
    pages["index.html"] = index_page(model, rows)
    with atomic_path(out_dir, directory=True) as tmp:
        for name, text in pages.items():
            (tmp / name).write_text(text, encoding="utf-8")
        selected = [
            {
                "neuron": n.name,
                "layer": n.layer,
                "index": n.index,
                "max": mx,
                "token_concentration": c,
                "mode_token": t,
                "page": page_name(n),
            }
            for n, mx, c, t in rows
        ]
        write_json(tmp / "selection.json", selected)
        write_provenance(tmp, config, seed, model=model, n_pages=len(rows))
