from lmfeatures.stages import run_rule
from lmfeatures.stages.report import sae_summary

run_rule(sae_summary, snakemake)
