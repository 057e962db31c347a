from lmfeatures.epo import epo_neurons_stage
from lmfeatures.io import log_stderr

p = snakemake.params
with log_stderr(snakemake.log[0]):
    epo_neurons_stage(snakemake.input.scan, snakemake.input.model, snakemake.output[0], p.explicit, p.per_layer, p.layers)
