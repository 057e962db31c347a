from lmfeatures.io import log_stderr
from lmfeatures.pages import neuron_pages_stage

p = snakemake.params
with log_stderr(snakemake.log[0]):
    neuron_pages_stage(
        snakemake.wildcards.model, snakemake.input.model, snakemake.input.scan, snakemake.output[0], p.selection,
        p.partner, p.config, p.seed, p.device,
    )  # fmt: skip
