from lmfeatures.stages import run_rule
from lmfeatures.stages.prune import prune_neurons

run_rule(prune_neurons, snakemake)
