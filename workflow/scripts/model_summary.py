from lmfeatures.stages import run_rule
from lmfeatures.stages.report import model_summary

run_rule(model_summary, snakemake)
