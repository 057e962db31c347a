# Neuron pages: each selected neuron's dataset examples, and its EPO prompts, pruned examples and
# most correlated SAE features where those stages ran on it; and the SAE feature pages.
# Stage functions: lmfeatures.stages.pages


rule neuron_pages:
    input:
        model_dir=model_dir("{model}"),
        scan_dir=scan_dir("{model}"),
        selection_json=selection_json("{model}"),
        prune_dir=lambda wc: [f"{RESULTS}/prune/{wc.model}"] if wc.model in config["prune"]["models"] else [],
        epo_runs=lambda wc: [d for n in epo_neurons_of(wc.model) for d in epo_seed_dirs(wc.model, n)],
        sae_checks=lambda wc: sae_checks_input(wc.model),
        sae_pages=lambda wc: [sae_dir(wc.model, "pages")] if sae_checks_input(wc.model) else [],
    output:
        out_dir=directory(pages_dir("{model}")),
    log:
        f"{RESULTS}/logs/neurons/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/neurons/{{model}}.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model),
    params:
        partner=lambda wc: partner_of(wc.model)["name"] if partner_of(wc.model) else None,
        sae_layer=config["sae"]["layer"],
        config=config_part("seed", "device", "scan", "neurons"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("pages"),
    script:
        "../scripts/neuron_pages.py"


rule sae_pages:
    input:
        model_dir=model_dir("{model}"),
        run_dir=sae_dir("{model}", "A"),
        checks_dir=sae_dir("{model}", "checks"),
    output:
        out_dir=directory(f"{RESULTS}/sae/{{model}}/L{{layer}}/pages"),
    log:
        f"{RESULTS}/logs/sae/{{model}}/L{{layer}}/pages.log",
    benchmark:
        f"{RESULTS}/benchmarks/sae/{{model}}/L{{layer}}/pages.tsv"
    wildcard_constraints:
        model=config["sae"]["model"] or "(?!)",
        layer=str(config["sae"]["layer"]),
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model),
    params:
        n_pages=config["sae"]["pages"],
        thresholds=config["sae"]["thresholds"],
        config=config_part("seed", "device", "sae"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("pages"),
    script:
        "../scripts/sae_pages.py"
