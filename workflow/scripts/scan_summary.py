from lmfeatures.io import log_stderr
from lmfeatures.scan_report import scan_summary_stage

p, i, o = snakemake.params, snakemake.input, snakemake.output
with log_stderr(snakemake.log[0]):
    scan_summary_stage(
        dict(zip(p.names, i.scans)), dict(zip(p.names, i.pages)), dict(zip(p.names, i.models)), p.kinds,
        o.distributions, o.table, o.gallery,
    )  # fmt: skip
