from lmfeatures.stages import run_rule
from lmfeatures.stages.report import epo_summary

run_rule(epo_summary, snakemake)
