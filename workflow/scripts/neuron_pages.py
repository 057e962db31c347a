from lmfeatures.stages import run_rule
from lmfeatures.stages.scans import neuron_pages

run_rule(neuron_pages, snakemake)
