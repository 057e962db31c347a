# Dataset max-activation scans and the report's "Dataset examples" pieces.
# Stage functions: lmfeatures.stages.scans


rule scan:
    input:
        model_dir=model_dir("{model}"),
        corpus_dir=rules.corpus.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/scans/{{model}}"),
    log:
        f"{RESULTS}/logs/scans/{{model}}.log",
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(60, studied_model, gpu=True),
    params:
        scan=config["scan"],
        config=config_part("seed", "device", "corpus", "scan"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("scans"),
    script:
        "../scripts/scan.py"


rule scan_summary:
    input:
        scans=[scan_dir(n) for n in MODELS],
        pages=[f"{RESULTS}/neurons/{n}" for n in MODELS],
        models=all_model_dirs(),
    output:
        distributions=f"{RESULTS}/report/dataset-examples/activation_distributions.png",
        table=f"{RESULTS}/report/dataset-examples/monosemantic.md",
        gallery_md=f"{RESULTS}/report/dataset-examples/gallery.md",
    log:
        f"{RESULTS}/logs/report/scan_summary.log",
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        names=list(MODELS),
        kinds={n: model_kind(n) for n in MODELS},
        code=stage_code("scans"),
    script:
        "../scripts/scan_summary.py"
