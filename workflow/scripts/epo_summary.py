from lmfeatures.stages import run_rule
from lmfeatures.stages.epo import epo_summary

run_rule(epo_summary, snakemake)
