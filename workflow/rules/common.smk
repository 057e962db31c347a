# Config validation and the helpers every rule file uses.
import re
from pathlib import Path

from snakemake.utils import min_version

from lmfeatures.config import validate_config
from lmfeatures.models import TRAIN, UNTRAINED_TWIN, check_hub_source

min_version("8.0")


validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

RESULTS = config["results"]
REPORT_DIR = Path(workflow.basedir) / "report"
MODELS = {m["name"]: m for m in config["models"]}
TRAINED = [n for n, m in MODELS.items() if m["source"] == TRAIN]
TWINS = [n for n, m in MODELS.items() if m["source"] == UNTRAINED_TWIN]
HUB = [n for n, m in MODELS.items() if m["source"] not in (TRAIN, UNTRAINED_TWIN)]

# A hub / path model that cannot be had stops the run here, before any job starts.
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


def partner_of(name):
    """The untrained twin of a trained model (role 'twin') or the trained model of a twin (role 'trained')."""
    entry = MODELS[name]
    if entry["source"] == UNTRAINED_TWIN:
        return {"name": entry["twin_of"], "role": "trained", "scan": scan_dir(entry["twin_of"])}
    twins = [t for t in TWINS if MODELS[t]["twin_of"] == name]
    return {"name": twins[0], "role": "twin", "scan": scan_dir(twins[0])} if twins else None


def model_kind(name):
    return {TRAIN: "trained", UNTRAINED_TWIN: "untrained"}.get(MODELS[name]["source"], "external")


def config_part(*sections):
    """The config sections a rule depends on: passed as a param (so editing another section does
    not rerun it) and recorded in its provenance."""
    return {s: config[s] for s in sections}
