from lmfeatures.epo_report import epo_summary_stage
from lmfeatures.io import log_stderr

p, o = snakemake.params, snakemake.output
with log_stderr(snakemake.log[0]):
    epo_summary_stage(
        dict(zip(p.labels, snakemake.input.compares)), dict(zip(p.labels, p.runs_per_key)),
        o.figure, o.section,
    )  # fmt: skip
