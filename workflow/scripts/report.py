from lmfeatures.stages import run_rule
from lmfeatures.stages.report import report

run_rule(report, snakemake)
