from lmfeatures.build import hub_model_stage
from lmfeatures.io import log_stderr

p = snakemake.params
with log_stderr(snakemake.log[0]):
    hub_model_stage(
        snakemake.input.corpus, snakemake.output[0], p.entry, p.training, p.config, p.seed, p.device,
        snakemake.threads,
    )  # fmt: skip
