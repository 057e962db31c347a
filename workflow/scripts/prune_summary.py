from lmfeatures.stages import run_rule
from lmfeatures.stages.report import prune_summary

run_rule(prune_summary, snakemake)
