from lmfeatures.stages import run_rule
from lmfeatures.stages.scans import scan_shard

run_rule(scan_shard, snakemake)
