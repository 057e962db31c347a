from lmfeatures.stages import run_rule
from lmfeatures.stages.scans import select_neurons

run_rule(select_neurons, snakemake)
