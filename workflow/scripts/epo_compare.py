from lmfeatures.epo_report import epo_compare_stage
from lmfeatures.io import log_stderr

p = snakemake.params
with log_stderr(snakemake.log[0]):
    epo_compare_stage(
        snakemake.input.model, snakemake.input.scan, list(snakemake.input.runs), snakemake.output[0],
        snakemake.wildcards.neuron, p.epo, p.device, snakemake.threads, p.config,
        snakemake.input.fluency[0] if snakemake.input.fluency else None,
    )  # fmt: skip
