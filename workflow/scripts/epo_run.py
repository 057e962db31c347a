from lmfeatures.epo import epo_run_stage
from lmfeatures.io import log_stderr

p, w = snakemake.params, snakemake.wildcards
with log_stderr(snakemake.log[0]):
    epo_run_stage(
        snakemake.input.model, snakemake.output[0], w.neuron, p.method, p.epo, int(w.seed), p.device,
        snakemake.threads, p.config, snakemake.input.fluency[0] if snakemake.input.fluency else None,
    )  # fmt: skip
