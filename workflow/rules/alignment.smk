# Feature alignment (seed 001's essay): the input maximising each feature found four ways per model,
# and whether feature i is the same across layers, sizes and trained / untrained twins, with nulls.
# Stage functions: lmfeatures.stages.alignment


rule alignment_inputs:
    input:
        model_dir=model_dir("{model}"),
    output:
        out_dir=directory(f"{RESULTS}/alignment/{{model}}"),
    log:
        f"{RESULTS}/logs/alignment/{{model}}.log",
    wildcard_constraints:
        model=one_of(config["alignment"]["models"]),
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


rule alignment_summary:
    input:
        input_dirs=[f"{RESULTS}/alignment/{m}" for m in config["alignment"]["models"]],
        model_dirs=[model_dir(m) for m in config["alignment"]["models"]],
    output:
        **alignment_sizes_figure(),
        metrics=f"{RESULTS}/report/alignment/metrics.json",
        heatmaps=f"{RESULTS}/report/alignment/heatmaps.png",
        distance=f"{RESULTS}/report/alignment/distance.png",
        section=f"{RESULTS}/report/alignment/summary.md",
    log:
        f"{RESULTS}/logs/report/alignment_summary.log",
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
        code=stage_code("alignment"),
    script:
        "../scripts/alignment_summary.py"
