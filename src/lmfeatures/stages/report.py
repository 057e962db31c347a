"""Rules of workflow/rules/report.smk: each report section's pieces (tables, figures, verdicts) from
the compute stages' outputs, and the rendered report. Presentation only: an edit here or in
lmfeatures.report reruns these jobs and no compute job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lmfeatures.alignment.metrics import compute_metrics
from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.prune.evaluate import PREDICTORS, frontier_recall
from lmfeatures.report.alignment import alignment_section
from lmfeatures.report.dataset_examples import concentration_table, distribution_figure, gallery
from lmfeatures.report.dreaming import dreaming_section, frontier_figure
from lmfeatures.report.jobs import jobs_figure, jobs_markdown
from lmfeatures.report.models import model_table, training_curves_figure
from lmfeatures.report.pages import page_name
from lmfeatures.report.plotting import markdown_table
from lmfeatures.report.pruning import pruning_section
from lmfeatures.report.render import render, report_path
from lmfeatures.report.sae import (
    evaluation_table,
    matched_features,
    pass_rates,
    planted_rates,
    rates_figure,
    sae_section,
    specificity_figure,
    universality_figure,
)
from lmfeatures.scan.neurons import Neuron
from lmfeatures.store.alignment import load_methods, load_profiles
from lmfeatures.store.benchmarks import read_job_benchmarks
from lmfeatures.store.data import load_tokenizer
from lmfeatures.store.epo import load_runs, read_compare, read_frontier
from lmfeatures.store.prune import load_evaluations, read_predictors, read_table, skipped_neurons
from lmfeatures.store.report import write_csv, write_numbers, write_text
from lmfeatures.store.sae import read_checks, read_paged, read_planted, read_proxies
from lmfeatures.store.sae import read_evaluation as read_sae_evaluation
from lmfeatures.store.scans import load_scan
from lmfeatures.store.selection import read_selection


def model_summary(*, models: list[str], table: str, csv: str, curves: str) -> None:
    """The model table (markdown + CSV) and the training-curve figure."""
    df = model_table(models)
    write_csv(csv, df)
    write_text(table, markdown_table(df))
    training_curves_figure(models, curves)


def scan_summary(
    *,
    scans: list[str],
    selections: list[str],
    models: list[str],
    names: list[str],
    kinds: dict[str, str],
    distributions: str,
    table: str,
    gallery_md: str,
) -> None:
    """The report's "Dataset examples" pieces; the table and gallery show the trained models (all, if none)."""
    loaded = {name: load_scan(path) for name, path in zip(names, scans)}
    trained = [n for n in names if kinds[n] == "trained"] or names
    paged = {n: read_selection(p)["pages"] for n, p in zip(names, selections) if n in trained}
    rows = {n: [{**r, "page": page_name(Neuron.from_name(r["neuron"]))} for r in sel] for n, sel in paged.items()}
    tokenizers = {n: load_tokenizer(m) for n, m in zip(names, models) if n in trained}
    distribution_figure(loaded, kinds, distributions)
    concentration_table(rows, table)
    gallery(rows, loaded, tokenizers, names, gallery_md)


def epo_summary(
    *,
    compares: list[str],
    figure: str,
    section: str,
    frontiers: str,
    labels: list[str],
    runs_per_key: list[list[str]],
) -> None:
    """The report's Dreaming section from every (model, neuron)'s comparison and runs (labels
    '{model} {neuron}'), and each neuron's own frontier figure, `frontiers`/{model}/{neuron}.png."""
    compared = {k: read_compare(d) for k, d in zip(labels, compares)}
    summaries = {k: summary for k, (summary, _) in compared.items()}
    data = {k: examples for k, (_, examples) in compared.items()}
    all_runs = {k: load_runs(dirs) for k, dirs in zip(labels, runs_per_key)}
    dreaming_section(summaries, all_runs, data, figure, section, figure_ref=report_path(figure))
    with atomic_path(frontiers, directory=True) as tmp:
        for k in labels:
            model, neuron = k.split(" ")
            frontier_figure(all_runs[k], data[k], summaries[k], neuron, tmp / model / f"{neuron}.png")


def prune_summary(
    *,
    prune_dirs: list[str],
    epo_runs: list[str],
    kinds: dict,
    epo_targets: list[dict],
    epo_position: str,
    figure: str,
    section: str,
) -> None:
    """The report section's pieces: paired F1 differences, verdicts per model kind and layer group,
    the tables of the trained models' best- and worst-explained neurons (by held-out F1), and the
    predictors' recall on EPO's frontier prompts (`epo_targets`: {"model", "neuron", "runs": EPO run
    dirs}; `epo_runs`: all of those run dirs)."""
    scores = load_evaluations(prune_dirs)
    folders = {Path(f).name: f for f in prune_dirs}
    trained = scores[scores["model"].map(kinds) == "trained"].dropna(subset=["predictor"])
    picks = trained.sort_values("predictor") if len(trained) else scores.dropna(subset=["predictor"])
    examples = {}
    for _, row in pd.concat([picks.tail(1), picks.head(1)]).drop_duplicates(["model", "neuron"]).iterrows():
        label = f"{row['model']} {row['neuron']} (held-out F1 {row['predictor']:.2f})"
        examples[label] = read_table(folders[row["model"]], row["neuron"])
    data_max = scores.set_index(["model", "neuron"])["data_max"]
    recall = []
    for target in epo_targets:
        predictors = read_predictors(folders[target["model"]], target["neuron"])
        if predictors is None:  # skipped by pruning: listed in the section already
            continue
        frontier = [p for run in target["runs"] for p in read_frontier(run)["frontier"]]
        row = frontier_recall(predictors, frontier, data_max[target["model"], target["neuron"]], epo_position)
        recall.append({"model": target["model"], "neuron": target["neuron"], **row})
    epo = pd.DataFrame(recall, columns=["model", "neuron", "prompts", "firing", *PREDICTORS])
    epo = epo.astype(dict.fromkeys(PREDICTORS, float))
    pruning_section(scores, kinds, examples, skipped_neurons(prune_dirs), epo, figure, section)


def alignment_summary(
    *,
    input_dirs: list[str],
    model_dirs: list[str],
    names: list[str],
    kinds: dict[str, str],
    twins: dict[str, str],
    sizes: list[str],
    alignment_params: dict,
    seed: int,
    metrics: str,
    claims: str,
    heatmaps: str,
    distance: str,
    section: str,
    sizes_figure: str | None = None,
) -> None:
    """The report section's pieces: every metric with its nulls and 95% intervals (`metrics`, json),
    the figures, the essay-style token tables and the verdicts (`section`). `twins` maps a trained
    model to its untrained twin (both searched); `sizes` are compared with each other (the rule
    declares `sizes_figure` when there are at least two)."""
    profiles = {n: load_profiles(d) for n, d in zip(names, input_dirs)}
    found = {n: load_methods(d) for n, d in zip(names, input_dirs)}
    kind, top_k = alignment_params["kind"], alignment_params["top_k"]
    numbers = compute_metrics(profiles, found, kinds, twins, sizes, kind, top_k, seed)
    write_numbers(metrics, numbers)
    tokenizers = {n: load_tokenizer(d) for n, d in zip(names, model_dirs)}
    figures = {"claims": claims, "heatmaps": heatmaps, "distance": distance, "sizes": sizes_figure}
    alignment_section(numbers, found, tokenizers, twins, kind, figures, section)


def sae_summary(
    *,
    run_dirs: list[str],
    checks_dirs: list[str],
    pages: str,
    planted: str,
    evaluation: str,
    rates: str,
    scatter: str,
    specificity: str,
    section: str,
    model: str,
    twin: str | None,
    checked_models: list[str],
    sae_params: dict,
    seed: int,
) -> None:
    """The report's "Sparse autoencoder features" pieces: evaluation.csv, the universality scatter,
    the specificity histograms and summary.md. `checked_models` name the models of `checks_dirs`."""
    evaluations = [read_sae_evaluation(d) for d in run_dirs]
    checks = {}
    for owner, path in zip(checked_models, checks_dirs):
        checks |= {(owner, name): table for name, table in read_checks(path).items()}
    layer = sae_params["layer"]
    page_links = {u: f"../sae/{model}/L{layer}/pages/A/F{u}.html" for u in read_paged(pages, "A")}
    proxies = read_proxies(checks_dirs[0])
    class_tokens = dict(zip(proxies["proxies"], proxies["class_tokens"]))
    panels = [(model, "A", f"SAE A of {model}")]
    if (model, "random-A") in checks:
        panels.append((model, "random-A", "random-decoder SAE A"))
    if twin and (twin, "A") in checks:
        panels.append((twin, "A", f"SAE A of {twin}"))
    planted_checks = read_planted(planted)
    write_csv(evaluation, evaluation_table(evaluations))
    rates_figure(pass_rates(checks, model), planted_rates(*planted_checks), rates)
    universality_figure(checks, panels, sae_params["thresholds"], scatter)
    specificity_figure(matched_features(checks[(model, "A")]), specificity)
    figures = {"rates": "sae/pass_rates.png", "scatter": "sae/universality.png", "specificity": "sae/specificity.png"}
    sae_section(
        evaluations, checks, planted_checks, model, twin, sae_params, class_tokens, page_links, figures, section
    )


def job_summary(*, benchmarks: str, table: str, figure: str) -> None:
    """The appendix: every finished job's benchmark under `benchmarks` (the report's own aside)."""
    jobs = read_job_benchmarks(benchmarks)
    write_text(table, jobs_markdown(jobs))
    jobs_figure(jobs, figure)


def report(
    *,
    source: str,
    pieces: list[str],
    html: str,
    provenance: str,
    sections: list[dict],
    renderer: str,
    config: dict,
    seed: int,
) -> None:
    """Render report/report.qmd with the registry's sections; `pieces` are every switched-on section's
    rule outputs, written under results/report/{section}/ next to `html`."""
    root = Path(html).parent
    assets = {str(Path(p).relative_to(root)): p for p in pieces}
    used = render(str(Path(source).parent), assets, html, renderer, sections)
    write_provenance(Path(provenance).parent, config, seed, renderer=used)
