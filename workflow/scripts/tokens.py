from lmfeatures.stages import run_rule
from lmfeatures.stages.data import tokens

run_rule(tokens, snakemake)
