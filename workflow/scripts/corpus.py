from lmfeatures.stages import run_rule
from lmfeatures.stages.data import corpus

run_rule(corpus, snakemake)
