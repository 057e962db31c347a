# Pruning top examples to minimal activating examples, local search into variants, held-out F1
# (and how well the patterns predict what EPO found, for the neurons both stages ran on).
# Stage functions: lmfeatures.stages.prune


rule prune_neurons:
    input:
        model_dir=model_dir("{model}"),
        scan_dir=scan_dir("{model}"),
    output:
        out_dir=directory(f"{RESULTS}/prune/{{model}}"),
    log:
        f"{RESULTS}/logs/prune/{{model}}.log",
    wildcard_constraints:
        model=one_of(config["prune"]["models"]),
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model_and_proposer, gpu=True),
    params:
        prune_params=config["prune"],
        selection=neuron_spec(config, "prune"),
        epo_selection=lambda wc: neuron_spec(config, "epo") if wc.model in config["epo"]["models"] else None,
        config=config_part("seed", "device", "scan", "neurons", "prune"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("prune"),
    script:
        "../scripts/prune_neurons.py"


rule prune_summary:
    input:
        prune_dirs=[f"{RESULTS}/prune/{m}" for m in config["prune"]["models"]],
        epo_runs=lambda wc: [d for m, n in pruned_epo_targets() for d in epo_seed_dirs(m, n)],
    output:
        figure=f"{RESULTS}/report/pruning/f1_by_layer.png",
        section=f"{RESULTS}/report/pruning/summary.md",
    log:
        f"{RESULTS}/logs/report/prune_summary.log",
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        kinds={m: model_kind(m) for m in config["prune"]["models"]},
        epo_targets=lambda wc: [{"model": m, "neuron": n, "runs": epo_seed_dirs(m, n)} for m, n in pruned_epo_targets()],
        epo_position=config["epo"]["position"],
        code=stage_code("prune"),
    script:
        "../scripts/prune_summary.py"
