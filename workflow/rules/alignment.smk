# Feature alignment (seed 001's essay): the input maximising each feature found four ways per model.
# Whether feature i is the same across layers, sizes and trained / untrained twins, with nulls, is
# computed by alignment_summary (report.smk).
# Stage functions: lmfeatures.stages.alignment


rule alignment_inputs:
    input:
        model_dir=model_dir("{model}"),
    output:
        out_dir=directory(f"{RESULTS}/alignment/{{model}}"),
    log:
        f"{RESULTS}/logs/alignment/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/alignment/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(config["alignment"]["models"]),
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model, gpu=True),
    params:
        alignment_params=config["alignment"],
        config=config_part("seed", "device", "alignment"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("alignment"),
    script:
        "../scripts/alignment_inputs.py"
