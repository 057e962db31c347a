"""Config validation: JSON schema (with defaults) plus the cross-field rules a schema cannot say.

Errors are one line naming the key, e.g.
    config key 'training.stpes': unknown key (allowed: batch_size, context_length, ...)
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from .models import TRAIN, UNTRAINED_TWIN

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
SIZE_FIELDS = ("n_layers", "d_model", "n_heads", "d_mlp")


class ConfigError(ValueError):
    """The config is invalid; the message names the key and says what is allowed."""


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _one_line(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = ".".join(p for p in (where if error.absolute_path else "", extra[0]) if p)
        return f"config key {key!r}: unknown key (allowed here: {', '.join(allowed)})"
    return f"config key {where!r}: {error.message}"


def check_schema(config: dict, schema: dict) -> None:
    """Raise ConfigError for the most relevant schema violation, as one line naming the key."""
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if errors:
        raise ConfigError(_one_line(jsonschema.exceptions.best_match(errors)))


def check_models(config: dict) -> None:
    """Rules across fields: unique names, size fields for trained models, twins of trained models."""
    names = [m["name"] for m in config["models"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"config key 'models': model name {dupes[0]!r} appears more than once")
    by_name = {m["name"]: m for m in config["models"]}
    for i, m in enumerate(config["models"]):
        if m["source"] == TRAIN:
            missing = [f for f in SIZE_FIELDS if f not in m]
            if missing:
                raise ConfigError(f"config key 'models[{i}]' ({m['name']}): source train needs {', '.join(missing)}")
            if m["d_model"] % m["n_heads"]:
                raise ConfigError(
                    f"config key 'models[{i}].n_heads' ({m['name']}): d_model={m['d_model']} is not divisible "
                    f"by n_heads={m['n_heads']}"
                )
        elif m["source"] == UNTRAINED_TWIN:
            twin = m.get("twin_of")
            if twin not in by_name or by_name[twin]["source"] != TRAIN:
                trained = [n for n, e in by_name.items() if e["source"] == TRAIN]
                raise ConfigError(
                    f"config key 'models[{i}].twin_of' ({m['name']}): {twin!r} is not a model with source train "
                    f"(trained models: {', '.join(trained) or 'none'})"
                )
        elif any(f in m for f in SIZE_FIELDS + ("twin_of",)):
            raise ConfigError(
                f"config key 'models[{i}]' ({m['name']}): size fields and twin_of apply only to source train / "
                f"untrained-twin; a hub or path model ({m['source']!r}) brings its own config"
            )


def check_stages(config: dict) -> None:
    """Model names that stages refer to must exist; stage settings must make a valid run."""
    from .epo import EPOError, method_config

    names = [m["name"] for m in config["models"]]
    epo = config.get("epo", {})
    for i, name in enumerate(epo.get("models", [])):
        if name not in names:
            raise ConfigError(f"config key 'epo.models[{i}]': no model named {name!r} (models: {', '.join(names)})")
    fluency = epo.get("fluency_model")
    if fluency is not None and fluency not in names:
        raise ConfigError(f"config key 'epo.fluency_model': no model named {fluency!r} (models: {', '.join(names)})")
    if epo:
        try:
            method_config("epo", epo, config.get("seed", 0))
        except EPOError as err:
            raise ConfigError(f"config key 'epo': {err}") from None


def neuron_spec(config: dict, stage: str | None = None) -> dict:
    """The neuron selection a stage uses: the shared `neurons:` section with the stage's own
    `neurons:` overrides (e.g. `epo.neurons`) on top; fields of lmfeatures.neurons.NeuronSpec."""
    return {**config["neurons"], **(config[stage].get("neurons", {}) if stage else {})}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Check `config` in place and fill schema defaults (via snakemake.utils.validate); returns it."""
    from snakemake.utils import validate

    check_schema(config, load_schema(schema_path))
    validate(config, str(schema_path), set_default=True)
    check_models(config)
    check_stages(config)
    return config


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Read a YAML config file and validate it (for use outside Snakemake, e.g. the probe CLI)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    return validate_config(copy.deepcopy(config), schema_path)


def model_entry(config: dict, name: str) -> dict:
    for m in config["models"]:
        if m["name"] == name:
            return m
    raise ConfigError(
        f"no model named {name!r} in the config (models: {', '.join(m['name'] for m in config['models'])})"
    )
