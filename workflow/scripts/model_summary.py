from lmfeatures.io import log_stderr
from lmfeatures.report import model_summary

with log_stderr(snakemake.log[0]):
    model_summary(snakemake.input.models, snakemake.output.table, snakemake.output.csv, snakemake.output.curves)
