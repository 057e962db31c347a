from lmfeatures.stages import run_rule
from lmfeatures.stages.sae import sae_train

run_rule(sae_train, snakemake)
