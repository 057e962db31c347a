# Report: rules write every table and figure; report/report.qmd only includes them.


rule model_summary:
    input:
        models=all_model_dirs(),
    output:
        table=f"{RESULTS}/report/tables/models.md",
        csv=f"{RESULTS}/report/tables/models.csv",
        curves=f"{RESULTS}/report/figures/training_curves.png",
    log:
        f"{RESULTS}/logs/report/model_summary.log",
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/model_summary.py"


rule report:
    input:
        source=REPORT_DIR / "report.qmd",
        tables=rules.model_summary.output.table,
        curves=rules.model_summary.output.curves,
        distributions=rules.scan_summary.output.distributions,
        monosemantic=rules.scan_summary.output.table,
        gallery=rules.scan_summary.output.gallery,
        pages=[f"{RESULTS}/neurons/{n}" for n in MODELS],
        dreaming=dreaming_inputs(),
    output:
        html=f"{RESULTS}/report/index.html",
        provenance=f"{RESULTS}/report/provenance.json",
    params:
        report_dir=lambda wc, input: str(Path(input.source).parent),
        assets=lambda wc, input: {
            "tables/models.md": input.tables,
            "figures/training_curves.png": input.curves,
            "figures/activation_distributions.png": input.distributions,
            "tables/monosemantic.md": input.monosemantic,
            "tables/gallery.md": input.gallery,
            **dreaming_assets(input),
        },
        renderer=config["report"]["renderer"],
        config=config,
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/report/report.log",
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/report.py"
