# Dataset max-activation scans, and the neuron selection every later stage reads.
# Stage functions: lmfeatures.stages.scans


SHARDED = [m for m in MODELS if scan_shards(config, m) > 1]


rule scan:
    input:
        model_dir=model_dir("{model}"),
        corpus_dir=rules.corpus.output.out_dir,
    output:
        out_dir=directory(f"{RESULTS}/scans/{{model}}"),
    log:
        f"{RESULTS}/logs/scans/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scans/{{model}}.tsv"
    wildcard_constraints:
        model=one_of([m for m in MODELS if m not in SHARDED]),
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(60, studied_model, gpu=True),
    params:
        scan=config_part("scan")["scan"],
        config=config_part("seed", "device", "corpus", "scan"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("scans"),
    script:
        "../scripts/scan.py"


# scan.shards > 1: the scan of a model as jobs over consecutive window ranges, then one exact merge
rule scan_shard:
    input:
        model_dir=model_dir("{model}"),
        corpus_dir=rules.corpus.output.out_dir,
    output:
        out_dir=temp(directory(f"{RESULTS}/scan-shards/{{model}}/{{shard}}")),
    log:
        f"{RESULTS}/logs/scans/{{model}}.shard{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scans/{{model}}.shard{{shard}}.tsv"
    wildcard_constraints:
        model=one_of(SHARDED),
        shard=r"\d+",
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    threads: config["job_threads"]
    resources:
        **job_resources(60, studied_model, gpu=True),
    params:
        shards=lambda wc: scan_shards(config, wc.model),
        scan=config_part("scan")["scan"],
        config=config_part("seed", "device", "corpus", "scan"),
        seed=config["seed"],
        device=config["device"],
        code=stage_code("scans"),
    script:
        "../scripts/scan_shard.py"


rule scan_merge:
    input:
        shard_dirs=lambda wc: [f"{RESULTS}/scan-shards/{wc.model}/{i}" for i in range(scan_shards(config, wc.model))],
    output:
        out_dir=directory(f"{RESULTS}/scans/{{model}}"),
    log:
        f"{RESULTS}/logs/scans/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scans/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(SHARDED),
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(30),
    params:
        scan=config_part("scan")["scan"],
        config=config_part("seed", "device", "corpus", "scan"),
        seed=config["seed"],
        code=stage_code("scans"),
    script:
        "../scripts/scan_merge.py"


# One selection per model, which EPO, pruning, the pages and the report read (a checkpoint: EPO's
# jobs depend on which neurons it lists).
checkpoint select_neurons:
    input:
        scan_dir=scan_dir("{model}"),
        model_dir=model_dir("{model}"),
        partner_scan=lambda wc: [scan_dir(partner_of(wc.model)["name"])] if partner_of(wc.model) else [],
    output:
        out_json=selection_json("{model}"),
    log:
        f"{RESULTS}/logs/selection/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/selection/{{model}}.tsv"
    priority: PRIORITY_CHAIN
    conda:
        "../envs/lmfeatures.yaml"
    resources:
        **job_resources(15),
    params:
        pages=neuron_spec(config),
        epo=lambda wc: neuron_spec(config, "epo") if wc.model in config["epo"]["models"] else None,
        prune=lambda wc: neuron_spec(config, "prune") if wc.model in config["prune"]["models"] else None,
        partner=lambda wc: partner_of(wc.model),
        seed=config["seed"],
        code=stage_code("scans"),
    script:
        "../scripts/select_neurons.py"
