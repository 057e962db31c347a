# The report: each section's rule writes its pieces under results/report/{section}/, its text is
# report/sections/{section}.md, and report/report.qmd includes the sections this registry lists.
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
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        code=stage_code("report"),
    script:
        "../scripts/model_summary.py"


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
