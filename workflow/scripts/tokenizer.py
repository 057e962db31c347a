from lmfeatures.build import tokenizer_stage
from lmfeatures.io import log_stderr

with log_stderr(snakemake.log[0]):
    tokenizer_stage(
        snakemake.input.corpus, snakemake.output[0], snakemake.params.tokenizer,
        snakemake.params.config, snakemake.params.seed,
    )  # fmt: skip
