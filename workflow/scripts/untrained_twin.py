from lmfeatures.stages import run_rule
from lmfeatures.stages.models import untrained_twin

run_rule(untrained_twin, snakemake)
