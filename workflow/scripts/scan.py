from lmfeatures.io import log_stderr
from lmfeatures.scan import scan_stage

p = snakemake.params
with log_stderr(snakemake.log[0]):
    scan_stage(
        snakemake.input.model, snakemake.input.corpus, snakemake.output[0], snakemake.wildcards.model, p.scan,
        p.config, p.seed, p.device, snakemake.threads,
    )  # fmt: skip
