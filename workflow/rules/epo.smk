# EPO per (model, neuron, method, seed) on the neurons of results/selection/{model}.json, compared
# with the dataset maximum from the scan.
# Stage functions: lmfeatures.stages.epo


rule epo_run:
    input:
        model_dir=model_dir("{model}"),
        fluency=lambda wc: fluency_dir(),
    output:
        out_dir=directory(f"{RESULTS}/epo/{{model}}/{{neuron}}/seed{{seed}}"),
    log:
        f"{RESULTS}/logs/epo/{{model}}/{{neuron}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/epo/{{model}}/{{neuron}}/seed{{seed}}.tsv"
    wildcard_constraints:
        neuron=r"L\d+N\d+",
        seed=r"\d+",
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["epo"]["threads"]
    resources:
        **job_resources(30, studied_and_fluency_models, gpu=True),
    params:
        method="epo",
        epo_params=config["epo"],
        config=config_part("seed", "device", "epo"),
        device=config["device"],
        code=stage_code("epo"),
    script:
        "../scripts/epo_run.py"


use rule epo_run as epo_baseline with:
    output:
        out_dir=directory(f"{RESULTS}/epo/{{model}}/{{neuron}}/baselines/{{baseline}}/seed{{seed}}"),
    log:
        f"{RESULTS}/logs/epo/{{model}}/{{neuron}}/baselines/{{baseline}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/epo/{{model}}/{{neuron}}/baselines/{{baseline}}/seed{{seed}}.tsv"
    wildcard_constraints:
        neuron=r"L\d+N\d+",
        baseline="gcg|random",
        seed=r"\d+",
    params:
        method=lambda wc: wc.baseline,  # the other params are epo_run's


rule epo_fluency:
    input:
        model_dir=model_dir("{model}"),
        scan_dir=scan_dir("{model}"),
        fluency=lambda wc: fluency_dir(),
    output:
        out_json=f"{RESULTS}/epo/{{model}}/real_text_xent.json",
    log:
        f"{RESULTS}/logs/epo/{{model}}/real_text_xent.log",
    benchmark:
        f"{RESULTS}/benchmarks/epo/{{model}}/real_text_xent.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15, studied_and_fluency_models),
    params:
        epo_params=config["epo"],
        seed=config["seed"],
        device=config["device"],
        code=stage_code("epo"),
    script:
        "../scripts/epo_fluency.py"


rule epo_compare:
    input:
        model_dir=model_dir("{model}"),
        scan_dir=scan_dir("{model}"),
        runs=lambda wc: epo_run_dirs(wc.model, wc.neuron),
        fluency=lambda wc: fluency_dir(),
        real_text=rules.epo_fluency.output.out_json,
    output:
        out_dir=directory(f"{RESULTS}/epo/{{model}}/{{neuron}}/compare"),
    log:
        f"{RESULTS}/logs/epo/{{model}}/{{neuron}}/compare.log",
    benchmark:
        f"{RESULTS}/benchmarks/epo/{{model}}/{{neuron}}/compare.tsv"
    wildcard_constraints:
        neuron=r"L\d+N\d+",
    conda:
        "../envs/lmfeatures.yaml"
    threads: 1
    resources:
        **job_resources(15, studied_and_fluency_models),
    params:
        epo_params=config["epo"],
        config=config_part("seed", "device", "epo", "scan"),
        device=config["device"],
        code=stage_code("epo"),
    script:
        "../scripts/epo_compare.py"
