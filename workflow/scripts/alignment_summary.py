from lmfeatures.stages import run_rule
from lmfeatures.stages.report import alignment_summary

run_rule(alignment_summary, snakemake)
