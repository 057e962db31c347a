# Neuron pages: each selected neuron's dataset examples, and its EPO prompts, pruned examples and
# most correlated SAE features where those stages ran on it.
# Stage functions: lmfeatures.stages.pages


rule neuron_pages:
    input:
        model_dir=model_dir("{model}"),
        scan_dir=scan_dir("{model}"),
        partner_scan=lambda wc: [partner_of(wc.model)["scan"]] if partner_of(wc.model) else [],
        prune_dir=lambda wc: [f"{RESULTS}/prune/{wc.model}"] if wc.model in config["prune"]["models"] else [],
        epo_runs=lambda wc: [d for n in epo_neurons_of(wc.model) for d in epo_seed_dirs(wc.model, n)],
        sae_checks=lambda wc: sae_checks_input(wc.model),
        sae_pages=lambda wc: [sae_dir(wc.model, "pages")] if sae_checks_input(wc.model) else [],
    output:
        out_dir=directory(f"{RESULTS}/neurons/{{model}}"),
    log:
        f"{RESULTS}/logs/neurons/{{model}}.log",
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model),
    params:
        selection=neuron_spec(config),
        partner=lambda wc: partner_of(wc.model),
        config=config_part("seed", "device", "scan", "neurons"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("pages"),
    script:
        "../scripts/neuron_pages.py"
