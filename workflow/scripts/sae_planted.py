from lmfeatures.stages import run_rule
from lmfeatures.stages.sae import sae_planted

run_rule(sae_planted, snakemake)
