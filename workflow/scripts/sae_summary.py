from lmfeatures.stages import run_rule
from lmfeatures.stages.sae import sae_summary

run_rule(sae_summary, snakemake)
