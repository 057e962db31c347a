from lmfeatures.stages import run_rule
from lmfeatures.stages.pages import neuron_pages

run_rule(neuron_pages, snakemake)
