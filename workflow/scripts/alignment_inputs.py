from lmfeatures.stages import run_rule
from lmfeatures.stages.alignment import alignment_inputs

run_rule(alignment_inputs, snakemake)
