# Dataset max-activation scans, neuron pages and the report's "Dataset examples" pieces.


rule scan:
    input:
        model=model_dir("{model}"),
        corpus=rules.corpus.output[0],
    output:
        directory(f"{RESULTS}/scans/{{model}}"),
    params:
        scan=config["scan"],
        config=config_part("seed", "device", "corpus", "scan"),
        seed=config["seed"],
        device=config["device"],
    threads: 2
    log:
        f"{RESULTS}/logs/scans/{{model}}.log",
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/scan.py"


rule neuron_pages:
    input:
        model=model_dir("{model}"),
        scan=scan_dir("{model}"),
        partner=lambda wc: [partner_of(wc.model)["scan"]] if partner_of(wc.model) else [],
    output:
        directory(f"{RESULTS}/neurons/{{model}}"),
    params:
        selection=config["neurons"],
        partner=lambda wc: partner_of(wc.model),
        config=config_part("seed", "device", "scan", "neurons"),
        seed=config["seed"],
        device=config["device"],
    threads: 2
    log:
        f"{RESULTS}/logs/neurons/{{model}}.log",
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/neuron_pages.py"


rule scan_summary:
    input:
        scans=[scan_dir(n) for n in MODELS],
        pages=[f"{RESULTS}/neurons/{n}" for n in MODELS],
        models=all_model_dirs(),
    output:
        distributions=f"{RESULTS}/report/figures/activation_distributions.png",
        table=f"{RESULTS}/report/tables/monosemantic.md",
        gallery=f"{RESULTS}/report/tables/gallery.md",
    params:
        names=list(MODELS),
        kinds={n: model_kind(n) for n in MODELS},
    log:
        f"{RESULTS}/logs/report/scan_summary.log",
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/scan_summary.py"
