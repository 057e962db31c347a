# Config validation and the helpers every rule file uses.
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

from snakemake.utils import min_version

from lmfeatures.config import (
    TRAIN,
    UNTRAINED_TWIN,
    ConfigSources,
    check_device,
    fill_defaults,
    neuron_spec,
    sae_runs,
    scan_shards,
    sae_twin,
    validate_config,
)
from lmfeatures.io import check_folders, code_version, release_stale_lock
from lmfeatures.store.selection import read_selection

min_version("8.0")

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
# The main process checks the whole config before any job runs (models built on the meta device,
# hub sources, cluster requests). A job's own process (a local job's subprocess, a cluster job)
# parses this workflow again: it only fills the schema's defaults, without importing torch, and its
# device is checked by the job itself (resolve_device).
MAIN_PROCESS = not (workflow.subprocess_exec or workflow.remote_exec)
if MAIN_PROCESS:
    validate_config(
        config,
        SCHEMA,
        devices_here=False,
        sources=ConfigSources([Path(f) for f in workflow.configfiles], dict(workflow.config_settings.config)),
    )
else:
    fill_defaults(config, SCHEMA)


onstart:
    if workflow.local_exec:
        check_device(config)


RESULTS = config["results"]
REPORT_DIR = Path(workflow.basedir) / "report"
MODELS = {m["name"]: m for m in config["models"]}
TRAINED = [n for n, m in MODELS.items() if m["source"] == TRAIN]
TWINS = [n for n, m in MODELS.items() if m["source"] == UNTRAINED_TWIN]
HUB = [n for n, m in MODELS.items() if m["source"] not in (TRAIN, UNTRAINED_TWIN)]

# The same command recovers after a run was killed: a lock its dead process left is removed.
if MAIN_PROCESS and not workflow.dryrun:
    _released = release_stale_lock()
    if _released:
        print(f"lmfeatures: {_released}", file=sys.stderr)

RESULT_FOLDERS = ("data", "models", "scans", "selection", "epo", "prune", "alignment", "sae", "neurons", "report")
if MAIN_PROCESS:  # a file where a results folder goes, or a hub / path model that cannot be had, stops the run here
    from lmfeatures.lm.models import check_hub_source

    check_folders(
        [f"{RESULTS}/{kind}/{name}" for kind in RESULT_FOLDERS for name in MODELS]
        + [f"{RESULTS}/logs/{kind}" for kind in RESULT_FOLDERS]
    )
    for _name in HUB:
        check_hub_source(_name, MODELS[_name]["source"])


def one_of(names):
    """Wildcard regex matching exactly these names (and nothing, for an empty list)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def model_dir(name):
    return f"{RESULTS}/models/{name}"


def all_model_dirs():
    return [model_dir(n) for n in MODELS]


def scan_dir(name):
    return f"{RESULTS}/scans/{name}"


def pages_dir(name):
    return f"{RESULTS}/neurons/{name}"


def partner_of(name):
    """The untrained twin of a trained model (role 'twin') or the trained model of a twin (role 'trained')."""
    entry = MODELS[name]
    if entry["source"] == UNTRAINED_TWIN:
        return {"name": entry["twin_of"], "role": "trained"}
    twins = [t for t in TWINS if MODELS[t]["twin_of"] == name]
    return {"name": twins[0], "role": "twin"} if twins else None


def model_kind(name):
    return {TRAIN: "trained", UNTRAINED_TWIN: "untrained"}.get(MODELS[name]["source"], "external")


def config_part(*sections):
    """The config sections a job depends on: passed as a param (so editing another section does
    not rerun it) and recorded in its provenance. How many jobs a scan is split into is left out:
    the shards merge into the same scan."""
    part = {s: config[s] for s in sections}
    if "scan" in part:
        part["scan"] = {k: v for k, v in part["scan"].items() if k != "shards"}
    return part


def fluency_dir():
    """The fluency model's folder as a list (empty when the model under study scores fluency itself)."""
    name = config["epo"]["fluency_model"]
    return [model_dir(name)] if name else []


def epo_seed_dirs(model, neuron):
    return [f"{RESULTS}/epo/{model}/{neuron}/seed{s}" for s in config["epo"]["seeds"]]


def epo_run_dirs(model, neuron):
    """EPO's runs and its baselines' runs."""
    epo = config["epo"]
    base = f"{RESULTS}/epo/{model}/{neuron}"
    return epo_seed_dirs(model, neuron) + [
        f"{base}/baselines/{b}/seed{s}" for b in epo["baselines"] for s in epo["baseline_seeds"]
    ]


def pruned_epo_targets():
    """epo_targets() of the models pruning also runs on (prune adds EPO's neurons to its selection)."""
    return [(m, n) for m, n in epo_targets() if m in config["prune"]["models"]]


def selection_json(name):
    return f"{RESULTS}/selection/{name}.json"


def epo_neurons_of(model):
    """The neurons EPO runs on for a model (none if it is not an EPO model): from the select_neurons
    checkpoint, as they depend on the scan."""
    if model not in config["epo"]["models"]:
        return []
    return read_selection(checkpoints.select_neurons.get(model=model).output[0])["epo"]


def epo_targets():
    """(model, neuron) pairs of every EPO model."""
    return [(m, n) for m in config["epo"]["models"] for n in epo_neurons_of(m)]


def alignment_twins():
    """{trained model: its untrained twin} for the pairs that alignment.models both lists."""
    names = config["alignment"]["models"]
    return {MODELS[n]["twin_of"]: n for n in names if n in TWINS and MODELS[n]["twin_of"] in names}


def alignment_sizes_figure():
    """The sizes figure, an output of alignment_summary when alignment.sizes lists two models or more."""
    if len(config["alignment"]["sizes"]) < 2:
        return {}
    return {"sizes_figure": f"{RESULTS}/report/alignment/sizes.png"}


SAE_RUNS = sae_runs(config)  # (model, run) of every SAE the config trains
SAE_MODELS = list(dict.fromkeys(m for m, _ in SAE_RUNS))


def sae_dir(model, what):
    """results/sae/{model}/L{layer}/{what}: a run's SAE, or "checks" / "pages"."""
    return f"{RESULTS}/sae/{model}/L{config['sae']['layer']}/{what}"


def sae_run_dirs(model=None):
    """The SAE folders of one model (all models: None)."""
    return [sae_dir(m, r) for m, r in SAE_RUNS if model in (None, m)]


def sae_checks_input(model):
    """The checks folder as a list: [] unless the model is the SAE stage's model."""
    return [sae_dir(model, "checks")] if model == config["sae"]["model"] else []


@functools.cache  # each stage's code is hashed once per parse, not once per rule
def stage_code(stage):
    """Hash of lmfeatures.stages.<stage> and everything it imports (lmfeatures.io.code_version).
    Each job takes it as a param, so that a code change reruns the jobs that run that code."""
    return code_version(f"lmfeatures.stages.{stage}")


def report_section(name, title, rule, on=True, off=""):
    """An entry of the report's section registry (workflow/rules/report.smk)."""
    return {"name": name, "title": title, "pieces": list(rule.output), "on": on, "off": off}


# --- the order of jobs on a few cores: training first (every chain starts from a trained model, and a
# training job takes all its threads), then the jobs of the long chains (the untrained twins and
# scans that the neuron selection, EPO and pruning wait for, EPO's runs, the SAE stage, alignment and
# its summary, the longest), then the rest (pages, pruning, the other summaries, the report).
PRIORITY_TRAINING = 50
PRIORITY_CHAIN = 10


# --- what each job asks the scheduler for (workflow/profiles/*; README, "On a cluster") ------------
GPUS = 1 if config["device"].startswith("cuda") else 0  # one GPU for each device-heavy job
if MAIN_PROCESS:  # a job's own process runs what the main process sized
    from lmfeatures.resources import (
        check_gpu_requests,
        check_partitions,
        mem_mb,
        model_parameters,
        proposer_parameters,
        runtime_minutes,
    )

    PARAMETERS = {n: model_parameters(config, n) for n in MODELS}
    PROPOSER_PARAMETERS = proposer_parameters(config) if config["prune"]["models"] else 0


def job_resources(minutes, parameters=lambda wc: 0, training=False, gpu=False):
    """A rule's resources: memory and time limit sized from `parameters(wildcards)`, the parameters
    of the models the job loads (lmfeatures.resources), and a GPU when `gpu` and device is cuda."""
    gpus = {"gpu": GPUS} if gpu and GPUS else {}  # no gpu key at all: Kubernetes reads gpu=0 as a request
    if not MAIN_PROCESS:
        return gpus
    sized = {
        "mem_mb": lambda wc: mem_mb(parameters(wc), training=training),
        "runtime": lambda wc: runtime_minutes(parameters(wc), minutes),
    }
    return {**sized, **gpus}


def studied_model(wc):
    return PARAMETERS[wc.model]


def studied_and_fluency_models(wc):
    name = config["epo"]["fluency_model"]
    return PARAMETERS[wc.model] + (PARAMETERS[name] if name else 0)


def studied_model_and_proposer(wc):
    return PARAMETERS[wc.model] + PROPOSER_PARAMETERS


def requested_resources():
    """The profile's / command line's resource settings, raw: {"default-resources": {...},
    "set-resources RULE": {...}}."""
    settings = workflow.resource_settings
    found = {"default-resources": settings.default_resources or {}}
    found.update({f"set-resources {rule}": values for rule, values in settings.overwrite_resources.items()})
    return {where: {k: getattr(v, "raw", v) for k, v in values.items()} for where, values in found.items()}


# Requests a cluster would refuse or waste stop the run here, before any job is submitted.
if MAIN_PROCESS:
    REQUESTED = requested_resources()
    check_gpu_requests(config["device"], REQUESTED)
    if any("slurm_partition" in v for v in REQUESTED.values()) and shutil.which("sinfo"):
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True)
        check_partitions(REQUESTED, sinfo.stdout.split())
