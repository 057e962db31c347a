from lmfeatures.stages import run_rule
from lmfeatures.stages.models import train_model

run_rule(train_model, snakemake)
