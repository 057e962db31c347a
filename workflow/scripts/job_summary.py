from lmfeatures.stages import run_rule
from lmfeatures.stages.report import job_summary

run_rule(job_summary, snakemake)
