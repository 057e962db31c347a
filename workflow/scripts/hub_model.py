from lmfeatures.stages import run_rule
from lmfeatures.stages.models import hub_model

run_rule(hub_model, snakemake)
