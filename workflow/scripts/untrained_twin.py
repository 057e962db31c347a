from lmfeatures.build import untrained_twin_stage
from lmfeatures.io import log_stderr

p = snakemake.params
with log_stderr(snakemake.log[0]):
    untrained_twin_stage(
        snakemake.input.tokenizer, snakemake.input.tokens, snakemake.output[0], p.entry, p.twin, p.training,
        p.config, p.seed, p.device, snakemake.threads,
    )  # fmt: skip
