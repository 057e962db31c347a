from lmfeatures.stages import run_rule
from lmfeatures.stages.data import tokenizer

run_rule(tokenizer, snakemake)
