from lmfeatures.stages import run_rule
from lmfeatures.stages.scans import scan

run_rule(scan, snakemake)
