from lmfeatures.stages import run_rule
from lmfeatures.stages.epo import epo_neurons

run_rule(epo_neurons, snakemake)
