# Pruning top examples to minimal activating examples, local search into variants, held-out F1, for
# the neurons of results/selection/{model}.json (how well the patterns predict what EPO found:
# prune_summary, report.smk).
# Stage functions: lmfeatures.stages.prune


rule prune_neurons:
    input:
        model_dir=model_dir("{model}"),
        scan_dir=scan_dir("{model}"),
        selection_json=selection_json("{model}"),
    output:
        out_dir=directory(f"{RESULTS}/prune/{{model}}"),
    log:
        f"{RESULTS}/logs/prune/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prune/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(config["prune"]["models"]),
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model_and_proposer, gpu=True),
    params:
        prune_params=config["prune"],
        config=config_part("seed", "device", "scan", "neurons", "prune"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("prune"),
    script:
        "../scripts/prune_neurons.py"
