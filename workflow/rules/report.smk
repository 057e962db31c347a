# The report: each section's rule writes its pieces under results/report/{section}/ from the compute
# stages' outputs (presentation only: these jobs alone rerun when lmfeatures.report changes), its
# text is report/sections/{section}.md, and report/report.qmd includes the sections this registry lists.
# Stage functions: lmfeatures.stages.report


rule model_summary:
    input:
        models=all_model_dirs(),
    output:
        table=f"{RESULTS}/report/models/models.md",
        csv=f"{RESULTS}/report/models/models.csv",
        curves=f"{RESULTS}/report/models/training_curves.png",
    log:
        f"{RESULTS}/logs/report/model_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/model_summary.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        code=stage_code("report"),
    script:
        "../scripts/model_summary.py"


rule scan_summary:
    input:
        scans=[scan_dir(n) for n in MODELS],
        selections=[selection_json(n) for n in MODELS],
        models=all_model_dirs(),
    output:
        distributions=f"{RESULTS}/report/dataset-examples/activation_distributions.png",
        table=f"{RESULTS}/report/dataset-examples/monosemantic.md",
        gallery_md=f"{RESULTS}/report/dataset-examples/gallery.md",
    log:
        f"{RESULTS}/logs/report/scan_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/scan_summary.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        names=list(MODELS),
        kinds={n: model_kind(n) for n in MODELS},
        code=stage_code("report"),
    script:
        "../scripts/scan_summary.py"


rule epo_summary:
    input:
        compares=lambda wc: [f"{RESULTS}/epo/{m}/{n}/compare" for m, n in epo_targets()],
        runs=lambda wc: [d for m, n in epo_targets() for d in epo_run_dirs(m, n)],
    output:
        figure=f"{RESULTS}/report/dreaming/epo_frontiers.png",
        section=f"{RESULTS}/report/dreaming/summary.md",
        frontiers=directory(f"{RESULTS}/report/dreaming/frontiers"),
    log:
        f"{RESULTS}/logs/report/epo_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/epo_summary.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        labels=lambda wc: [f"{m} {n}" for m, n in epo_targets()],
        runs_per_key=lambda wc: [epo_run_dirs(m, n) for m, n in epo_targets()],
        code=stage_code("report"),
    script:
        "../scripts/epo_summary.py"


rule prune_summary:
    input:
        prune_dirs=[f"{RESULTS}/prune/{m}" for m in config["prune"]["models"]],
        epo_runs=lambda wc: [d for m, n in pruned_epo_targets() for d in epo_seed_dirs(m, n)],
    output:
        figure=f"{RESULTS}/report/pruning/paired_f1.png",
        section=f"{RESULTS}/report/pruning/summary.md",
    log:
        f"{RESULTS}/logs/report/prune_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/prune_summary.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        kinds={m: model_kind(m) for m in config["prune"]["models"]},
        epo_targets=lambda wc: [{"model": m, "neuron": n, "runs": epo_seed_dirs(m, n)} for m, n in pruned_epo_targets()],
        epo_position=config["epo"]["position"],
        code=stage_code("report"),
    script:
        "../scripts/prune_summary.py"


rule alignment_summary:
    input:
        input_dirs=[f"{RESULTS}/alignment/{m}" for m in config["alignment"]["models"]],
        model_dirs=[model_dir(m) for m in config["alignment"]["models"]],
    output:
        **alignment_sizes_figure(),
        metrics=f"{RESULTS}/report/alignment/metrics.json",
        claims=f"{RESULTS}/report/alignment/claims.png",
        heatmaps=f"{RESULTS}/report/alignment/heatmaps.png",
        distance=f"{RESULTS}/report/alignment/distance.png",
        section=f"{RESULTS}/report/alignment/summary.md",
    log:
        f"{RESULTS}/logs/report/alignment_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/alignment_summary.tsv"
    priority: PRIORITY_CHAIN  # the longest summary: not alone at the end
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        names=config["alignment"]["models"],
        kinds={m: model_kind(m) for m in config["alignment"]["models"]},
        twins=alignment_twins(),
        sizes=config["alignment"]["sizes"],
        alignment_params=config["alignment"],
        seed=config["seed"],
        code=stage_code("report"),
    script:
        "../scripts/alignment_summary.py"


rule sae_summary:
    input:
        run_dirs=sae_run_dirs(),
        checks_dirs=[sae_dir(m, "checks") for m in SAE_MODELS],
        pages=sae_dir(config["sae"]["model"], "pages"),
        planted=sae_dir(config["sae"]["model"], "planted"),
    output:
        evaluation=f"{RESULTS}/report/sae/evaluation.csv",
        rates=f"{RESULTS}/report/sae/pass_rates.png",
        scatter=f"{RESULTS}/report/sae/universality.png",
        specificity=f"{RESULTS}/report/sae/specificity.png",
        section=f"{RESULTS}/report/sae/summary.md",
    log:
        f"{RESULTS}/logs/report/sae_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/sae_summary.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        model=config["sae"]["model"],
        twin=sae_twin(config),
        checked_models=SAE_MODELS,
        sae_params=config["sae"],
        seed=config["seed"],
        code=stage_code("report"),
    script:
        "../scripts/sae_summary.py"


# The section registry, in report order: adding a section is one entry here, the rule that writes
# its pieces, and report/sections/{name}.md.
REPORT_SECTIONS = [
    report_section("models", "Models", rules.model_summary),
    report_section("dataset-examples", "Dataset examples", rules.scan_summary),
    report_section(
        "dreaming",
        "Dreaming",
        rules.epo_summary,
        on=bool(config["epo"]["models"]),
        off="EPO is switched off in this configuration: list model names under `epo.models` to run it.",
    ),
    report_section(
        "pruning",
        "What exactly does a neuron respond to?",
        rules.prune_summary,
        on=bool(config["prune"]["models"]),
        off="Pruning is switched off in this configuration: list model names under `prune.models` to run it.",
    ),
    report_section(
        "alignment",
        "Are features aligned across layers?",
        rules.alignment_summary,
        on=bool(config["alignment"]["models"]),
        off="Alignment is switched off in this configuration: list model names under `alignment.models` to run it.",
    ),
    report_section(
        "sae",
        "Sparse autoencoder features",
        rules.sae_summary,
        on=bool(config["sae"]["model"]),
        off="The SAE stage is switched off in this configuration: name a model under `sae.model` to run it.",
    ),
]


# The appendix comes last: its rule waits for every other job (the other sections' pieces and the
# neuron pages), so that it reads their benchmark files.
rule job_summary:
    input:
        pieces=[p for s in REPORT_SECTIONS if s["on"] for p in s["pieces"]],
        pages=[pages_dir(m) for m in MODELS],
    output:
        table=f"{RESULTS}/report/jobs/jobs.md",
        figure=f"{RESULTS}/report/jobs/jobs.png",
    log:
        f"{RESULTS}/logs/report/job_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/job_summary.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        benchmarks=f"{RESULTS}/benchmarks",
        code=stage_code("report"),
    script:
        "../scripts/job_summary.py"


REPORT_SECTIONS.append(report_section("jobs", "Appendix: time and memory of each job", rules.job_summary))


rule report:
    input:
        # part of the workflow's source, not of its results: local() keeps them out of remote storage
        source=local(REPORT_DIR / "report.qmd"),
        texts=[local(REPORT_DIR / "sections" / f"{s['name']}.md") for s in REPORT_SECTIONS],
        pieces=[p for s in REPORT_SECTIONS if s["on"] for p in s["pieces"]],
    output:
        html=f"{RESULTS}/report/index.html",
        provenance=f"{RESULTS}/report/provenance.json",
    log:
        f"{RESULTS}/logs/report/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/report.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        sections=[{k: s[k] for k in ("name", "title", "on", "off")} for s in REPORT_SECTIONS],
        renderer=config["report"]["renderer"],
        config=config,
        seed=config["seed"],
        code=stage_code("report"),
    script:
        "../scripts/report.py"
