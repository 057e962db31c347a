# Every configured model ends up under results/models/{model} as a save_pretrained directory.


rule train_model:
    input:
        tokenizer=rules.tokenizer.output[0],
        tokens=rules.tokens.output[0],
    output:
        directory(f"{RESULTS}/models/{{model}}"),
    wildcard_constraints:
        model=one_of(TRAINED),
    params:
        entry=lambda wc: MODELS[wc.model],
        training=config["training"],
        config=config_part("seed", "device", "corpus", "tokenizer", "training"),
        seed=config["seed"],
        device=config["device"],
    threads: config["training"]["threads"]
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    resources:
        mem_mb=6000,
        runtime=60,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/train_model.py"


rule untrained_twin:
    input:
        tokenizer=rules.tokenizer.output[0],
        tokens=rules.tokens.output[0],
    output:
        directory(f"{RESULTS}/models/{{model}}"),
    wildcard_constraints:
        model=one_of(TWINS),
    params:
        entry=lambda wc: MODELS[wc.model],
        twin=lambda wc: MODELS[MODELS[wc.model]["twin_of"]],
        training=config["training"],
        config=config_part("seed", "device", "corpus", "tokenizer", "training"),
        seed=config["seed"],
        device=config["device"],
    threads: 1
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/untrained_twin.py"


rule hub_model:
    input:
        corpus=rules.corpus.output[0],
    output:
        directory(f"{RESULTS}/models/{{model}}"),
    wildcard_constraints:
        model=one_of(HUB),
    params:
        entry=lambda wc: MODELS[wc.model],
        training=config["training"],
        config=config_part("seed", "device", "corpus", "training"),
        seed=config["seed"],
        device=config["device"],
    threads: 2
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/hub_model.py"
