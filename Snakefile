# lmfeatures: how language-model features can be found and checked.
# Wiring only: rules live in workflow/rules/, logic in src/lmfeatures/.


# The default config. A file given with --configfile replaces it (the schema's defaults fill what that
# file leaves out); --config key=value overrides either.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/scans.smk"
include: "workflow/rules/epo.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/alignment.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/pages.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.report.output.html,
        # the report links every model's neuron pages
        [pages_dir(m) for m in MODELS],
