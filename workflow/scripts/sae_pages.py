from lmfeatures.stages import run_rule
from lmfeatures.stages.pages import sae_pages

run_rule(sae_pages, snakemake)
