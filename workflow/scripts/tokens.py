from lmfeatures.build import tokens_stage
from lmfeatures.io import log_stderr

with log_stderr(snakemake.log[0]):
    tokens_stage(
        snakemake.input.corpus, snakemake.input.tokenizer, snakemake.output[0],
        snakemake.params.config, snakemake.params.seed,
    )  # fmt: skip
