# EPO per (model, neuron, method, seed), compared with the dataset maximum from the scan.


checkpoint epo_neurons:
    input:
        scan=scan_dir("{model}"),
        model=model_dir("{model}"),
    output:
        f"{RESULTS}/epo/{{model}}/neurons.json",
    params:
        explicit=config["epo"]["neurons"],
        per_layer=config["epo"]["auto_per_layer"],
        layers=config["epo"]["auto_layers"],
    log:
        f"{RESULTS}/logs/epo/{{model}}/neurons.log",
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/epo_neurons.py"


rule epo_run:
    input:
        model=model_dir("{model}"),
        fluency=lambda wc: fluency_dir(),
    output:
        directory(f"{RESULTS}/epo/{{model}}/{{neuron}}/seed{{seed}}"),
    wildcard_constraints:
        neuron=r"L\d+N\d+",
        seed=r"\d+",
    params:
        method="epo",
        epo=config["epo"],
        config=config_part("seed", "device", "epo"),
        device=config["device"],
    threads: config["epo"]["threads"]
    log:
        f"{RESULTS}/logs/epo/{{model}}/{{neuron}}/seed{{seed}}.log",
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/epo_run.py"


use rule epo_run as epo_baseline with:
    output:
        directory(f"{RESULTS}/epo/{{model}}/{{neuron}}/baselines/{{method}}/seed{{seed}}"),
    wildcard_constraints:
        neuron=r"L\d+N\d+",
        method="gcg|random",
        seed=r"\d+",
    params:
        method=lambda wc: wc.method,
        epo=config["epo"],
        config=config_part("seed", "device", "epo"),
        device=config["device"],
    log:
        f"{RESULTS}/logs/epo/{{model}}/{{neuron}}/baselines/{{method}}/seed{{seed}}.log",


rule epo_compare:
    input:
        model=model_dir("{model}"),
        scan=scan_dir("{model}"),
        runs=lambda wc: epo_run_dirs(wc.model, wc.neuron),
        fluency=lambda wc: fluency_dir(),
    output:
        directory(f"{RESULTS}/epo/{{model}}/{{neuron}}/compare"),
    wildcard_constraints:
        neuron=r"L\d+N\d+",
    params:
        epo=config["epo"],
        config=config_part("seed", "device", "epo", "scan"),
        device=config["device"],
    threads: 1
    log:
        f"{RESULTS}/logs/epo/{{model}}/{{neuron}}/compare.log",
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/epo_compare.py"


rule epo_summary:
    input:
        compares=lambda wc: [f"{RESULTS}/epo/{m}/{n}/compare" for m, n in epo_targets()],
        runs=lambda wc: [d for m, n in epo_targets() for d in epo_run_dirs(m, n)],
    output:
        figure=f"{RESULTS}/report/figures/epo_frontiers.png",
        section=f"{RESULTS}/report/sections/dreaming.md",
    params:
        labels=lambda wc: [f"{m} {n}" for m, n in epo_targets()],
        runs_per_key=lambda wc: [epo_run_dirs(m, n) for m, n in epo_targets()],
    log:
        f"{RESULTS}/logs/report/epo_summary.log",
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/epo_summary.py"
