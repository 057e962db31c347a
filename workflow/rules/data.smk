# Corpus -> tokenizer -> token arrays, shared by every model of the embedded family.


rule corpus:
    output:
        directory(f"{RESULTS}/data/corpus"),
    params:
        corpus=config["corpus"],
        config=config_part("seed", "corpus"),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/data/corpus.log",
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/corpus.py"


rule tokenizer:
    input:
        corpus=rules.corpus.output[0],
    output:
        directory(f"{RESULTS}/data/tokenizer"),
    params:
        tokenizer=config["tokenizer"],
        config=config_part("seed", "corpus", "tokenizer"),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/data/tokenizer.log",
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/tokenizer.py"


rule tokens:
    input:
        corpus=rules.corpus.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        directory(f"{RESULTS}/data/tokens"),
    params:
        config=config_part("seed", "corpus", "tokenizer"),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/data/tokens.log",
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/lmfeatures.yaml"
    script:
        "../scripts/tokens.py"
