# Every configured model ends up under results/models/{model} as a save_pretrained directory.
# Stage functions: lmfeatures.stages.models


rule train_model:
    input:
        tokenizer_dir=rules.tokenizer.output.out_dir,
        tokens_dir=rules.tokens.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/models/{{model}}"),
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(TRAINED),
    priority: PRIORITY_TRAINING
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["training"]["threads"]
    resources:
        **job_resources(60, studied_model, training=True, gpu=True),
    params:
        entry=lambda wc: MODELS[wc.model],
        training=config["training"],
        config=config_part("seed", "device", "corpus", "tokenizer", "training"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("models"),
    script:
        "../scripts/train_model.py"


rule untrained_twin:
    input:
        tokenizer_dir=rules.tokenizer.output.out_dir,
        tokens_dir=rules.tokens.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/models/{{model}}"),
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(TWINS),
    priority: PRIORITY_CHAIN  # the trained model's neuron selection waits for its twin's scan
    conda:
        "../envs/lmfeatures.yaml"
    threads: 1
    resources:
        **job_resources(20, studied_model),
    params:
        entry=lambda wc: MODELS[wc.model],
        twin=lambda wc: MODELS[MODELS[wc.model]["twin_of"]],
        training=config["training"],
        config=config_part("seed", "device", "corpus", "tokenizer", "training"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("models"),
    script:
        "../scripts/untrained_twin.py"


rule hub_model:
    input:
        corpus_dir=rules.corpus.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/models/{{model}}"),
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(HUB),
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(60, studied_model, gpu=True),
    params:
        entry=lambda wc: MODELS[wc.model],
        entry_key=lambda wc: f"models[{list(MODELS).index(wc.model)}]",
        training=config["training"],
        config=config_part("seed", "device", "corpus", "training"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("models"),
    script:
        "../scripts/hub_model.py"
