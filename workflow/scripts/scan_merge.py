from lmfeatures.stages import run_rule
from lmfeatures.stages.scans import scan_merge

run_rule(scan_merge, snakemake)
