# Sparse autoencoder features (seed 004): SAEs trained per run, and the five checks on every unit of
# every dictionary (SAE runs, neurons, untrained-twin and random-decoder SAEs). Feature pages:
# pages.smk; the report's pieces: report.smk.
# Stage functions: lmfeatures.stages.sae


rule sae_train:
    input:
        model_dir=model_dir("{model}"),
        corpus_dir=rules.corpus.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/sae/{{model}}/L{{layer}}/{{run}}"),
    log:
        f"{RESULTS}/logs/sae/{{model}}/L{{layer}}/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sae/{{model}}/L{{layer}}/{{run}}.tsv"
    wildcard_constraints:
        model=one_of(SAE_MODELS),
        layer=str(config["sae"]["layer"]),
        run=one_of(sorted({r for _, r in SAE_RUNS})),
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model, gpu=True),
    params:
        sae_params=config["sae"],
        context_length=config["scan"]["context_length"],
        config=config_part("seed", "device", "corpus", "scan", "sae"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("sae"),
    script:
        "../scripts/sae_train.py"


rule sae_checks:
    input:
        model_dir=model_dir("{model}"),
        corpus_dir=rules.corpus.output.out_dir,
        run_dirs=lambda wc: sae_run_dirs(wc.model),
    output:
        out_dir=directory(f"{RESULTS}/sae/{{model}}/L{{layer}}/checks"),
    log:
        f"{RESULTS}/logs/sae/{{model}}/L{{layer}}/checks.log",
    benchmark:
        f"{RESULTS}/benchmarks/sae/{{model}}/L{{layer}}/checks.tsv"
    wildcard_constraints:
        model=one_of(SAE_MODELS),
        layer=str(config["sae"]["layer"]),
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model, gpu=True),
    params:
        with_neurons="neurons" in config["sae"]["controls"],
        sae_params=config["sae"],
        context_length=config["scan"]["context_length"],
        config=config_part("seed", "device", "corpus", "scan", "sae"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("sae"),
    script:
        "../scripts/sae_checks.py"


rule sae_planted:
    input:
        model_dir=model_dir("{model}"),
        corpus_dir=rules.corpus.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/sae/{{model}}/L{{layer}}/planted"),
    log:
        f"{RESULTS}/logs/sae/{{model}}/L{{layer}}/planted.log",
    benchmark:
        f"{RESULTS}/benchmarks/sae/{{model}}/L{{layer}}/planted.tsv"
    wildcard_constraints:
        model=config["sae"]["model"] or "(?!)",
        layer=str(config["sae"]["layer"]),
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(30, studied_model, gpu=True),
    params:
        sae_params=config["sae"],
        context_length=config["scan"]["context_length"],
        config=config_part("seed", "device", "corpus", "scan", "sae"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("sae"),
    script:
        "../scripts/sae_planted.py"
