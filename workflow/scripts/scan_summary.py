from lmfeatures.stages import run_rule
from lmfeatures.stages.report import scan_summary

run_rule(scan_summary, snakemake)
