from lmfeatures.stages import run_rule
from lmfeatures.stages.epo import epo_fluency

run_rule(epo_fluency, snakemake)
