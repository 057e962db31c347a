# Corpus -> tokenizer -> token arrays, shared by every model of the embedded family.
# Stage functions: lmfeatures.stages.data


rule corpus:
    output:
        out_dir=directory(f"{RESULTS}/data/corpus"),
    log:
        f"{RESULTS}/logs/data/corpus.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/corpus.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(20),
    params:
        corpus=config["corpus"],
        config=config_part("seed", "corpus"),
        seed=config["seed"],
        code=stage_code("data"),
    script:
        "../scripts/corpus.py"


rule tokenizer:
    input:
        corpus_dir=rules.corpus.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/data/tokenizer"),
    log:
        f"{RESULTS}/logs/data/tokenizer.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/tokenizer.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(20),
    params:
        tokenizer=config["tokenizer"],
        config=config_part("seed", "corpus", "tokenizer"),
        seed=config["seed"],
        code=stage_code("data"),
    script:
        "../scripts/tokenizer.py"


rule tokens:
    input:
        corpus_dir=rules.corpus.output.out_dir,
        tokenizer_dir=rules.tokenizer.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/data/tokens"),
    log:
        f"{RESULTS}/logs/data/tokens.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/tokens.tsv"
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(20),
    params:
        config=config_part("seed", "corpus", "tokenizer"),
        seed=config["seed"],
        code=stage_code("data"),
    script:
        "../scripts/tokens.py"
