from lmfeatures.stages import run_rule
from lmfeatures.stages.sae import sae_pages

run_rule(sae_pages, snakemake)
