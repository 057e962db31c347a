from lmfeatures.build import trained_model_stage
from lmfeatures.io import log_stderr

p = snakemake.params
with log_stderr(snakemake.log[0]):
    trained_model_stage(
        snakemake.input.tokenizer, snakemake.input.tokens, snakemake.output[0], p.entry, p.training,
        p.config, p.seed, p.device, snakemake.threads,
    )  # fmt: skip
