from lmfeatures.stages import run_rule
from lmfeatures.stages.sae import sae_checks

run_rule(sae_checks, snakemake)
