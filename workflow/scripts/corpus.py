from lmfeatures.build import corpus_stage
from lmfeatures.io import log_stderr

with log_stderr(snakemake.log[0]):
    corpus_stage(snakemake.output[0], snakemake.params.corpus, snakemake.params.config, snakemake.params.seed)
