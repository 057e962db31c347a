from lmfeatures.stages import run_rule
from lmfeatures.stages.epo import epo_compare

run_rule(epo_compare, snakemake)
