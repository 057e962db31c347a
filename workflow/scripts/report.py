from lmfeatures.io import log_stderr
from lmfeatures.report import report_stage

p = snakemake.params
with log_stderr(snakemake.log[0]):
    report_stage(p.report_dir, p.assets, snakemake.output.html, p.renderer, p.config, p.seed)
