from lmfeatures.stages import run_rule
from lmfeatures.stages.epo import epo_run

run_rule(epo_run, snakemake)
