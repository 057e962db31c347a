"""Config validation: JSON schema (with defaults) plus the cross-field rules a schema cannot say.

Errors are one line naming the key, e.g.
    config key 'training.stpes': unknown key (allowed: batch_size, context_length, ...)
"""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

TRAIN, UNTRAINED_TWIN = "train", "untrained-twin"  # model sources of the embedded family (lmfeatures.lm.models)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
SIZE_FIELDS = ("n_layers", "d_model", "n_heads", "d_mlp")
STAGES_ON_MODELS = ("epo", "prune")  # stages that run on the models their `models:` key lists


class ConfigError(ValueError):
    """The config is invalid; the message names the key and says what is allowed."""


KEY_PATTERN = re.compile(r"^config key '([^']+)'")
KEY_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _has_key(config, key: str) -> bool:
    """Whether `config` holds the key path `key` ("epo.neurons.layers[1]")."""
    node = config
    for name, index in KEY_PART.findall(key):
        if name and isinstance(node, dict) and name in node:
            node = node[name]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return False
    return True


@dataclass
class ConfigSources:
    """Where a run's config came from: the config files, in order, and the --config overrides."""

    files: list[Path]
    overrides: dict = field(default_factory=dict)

    def origin(self, key: str) -> str | None:
        """Where the value of `key` came from, when not from the config files (None when it did)."""
        if _has_key(self.overrides, key):
            return "its value comes from --config"
        if any(_has_key(yaml.safe_load(f.read_text()) or {}, key) for f in self.files):
            return None
        named = ", ".join(str(f) for f in self.files) or "no config file"
        return f"not set in {named}: the schema's default, workflow/schemas/config.schema.yaml"


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
        if m["source"] in (TRAIN, UNTRAINED_TWIN) and "module_paths" in m:
            raise ConfigError(
                f"config key 'models[{i}].module_paths' ({m['name']}): applies to hub or path models only; the "
                "embedded family's hook points are known"
            )
        if m["source"] in (TRAIN, UNTRAINED_TWIN):
            continue
        if any(f in m for f in SIZE_FIELDS + ("twin_of",)):
            raise ConfigError(
                f"config key 'models[{i}]' ({m['name']}): size fields and twin_of apply only to source train / "
                f"untrained-twin; a hub or path model ({m['source']!r}) brings its own config"
            )


def check_corpus(config: dict) -> None:
    """The corpus's encoding is one Python knows."""
    import codecs

    try:
        codecs.lookup(config["corpus"]["encoding"])
    except LookupError:
        raise ConfigError(
            f"config key 'corpus.encoding': {config['corpus']['encoding']!r} is not an encoding Python knows "
            "(e.g. utf-8, latin-1, cp1252)"
        ) from None


def check_stages(config: dict) -> None:
    """Model names that stages refer to must exist; stage settings must make a valid run."""
    from lmfeatures.epo.epo import EPOError, method_config

    names = [m["name"] for m in config["models"]]
    for stage in STAGES_ON_MODELS:
        for i, name in enumerate(config.get(stage, {}).get("models", [])):
            if name not in names:
                raise ConfigError(
                    f"config key '{stage}.models[{i}]': no model named {name!r} (models: {', '.join(names)})"
                )
    alignment = config.get("alignment", {})
    for key in ("models", "sizes"):
        for i, name in enumerate(alignment.get(key, [])):
            if name not in names:
                raise ConfigError(
                    f"config key 'alignment.{key}[{i}]': no model named {name!r} (models: {', '.join(names)})"
                )
    _check_same_tokenizer(config, alignment.get("sizes", []))
    shards = config.get("scan", {}).get("shards", 1)
    for name in shards if isinstance(shards, dict) else []:
        if name not in names:
            raise ConfigError(f"config key 'scan.shards.{name}': no model named {name!r} (models: {', '.join(names)})")
    epo = config.get("epo", {})
    fluency = epo.get("fluency_model")
    if fluency is not None and fluency not in names:
        raise ConfigError(f"config key 'epo.fluency_model': no model named {fluency!r} (models: {', '.join(names)})")
    if epo:
        try:
            method_config("epo", epo, config.get("seed", 0))
        except EPOError as err:
            raise ConfigError(f"config key 'epo': {err}") from None
    if config.get("prune"):
        from lmfeatures.prune.prune import prune_config

        try:
            prune_config(config["prune"])
        except ValueError as err:
            raise ConfigError(f"config key 'prune': {err}") from None
        if config["prune"].get("proposer", "model") != "model":
            fill_mask_path(config["prune"]["proposer"])


def saved_model_dir(source: str) -> Path | None:
    """The directory holding config.json of a model given as a local path or as a hub id already
    in the local cache (nothing is downloaded); None when there is none yet."""
    path = Path(source).expanduser()
    if (path / "config.json").is_file():
        return path
    if path.exists() or source.startswith(("/", ".", "~")):
        return None  # a local path without a model
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def fill_mask_path(source: str) -> Path:
    """saved_model_dir() of a fill-mask model; ConfigError naming `prune.proposer` when it is
    missing or has no masked-LM head."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    path = saved_model_dir(source)
    if path is None:
        raise ConfigError(
            f"config key 'prune.proposer': {source!r} is neither a directory with a saved fill-mask model nor "
            "a hub id in the local cache (nothing is downloaded here): save one with save_pretrained, or set "
            "proposer: model"
        )
    model_type = AutoConfig.from_pretrained(str(path)).model_type
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ConfigError(
            f"config key 'prune.proposer': {source!r} is a {model_type} model, which has no masked-LM head "
            "(fill-mask models: BERT, DistilBERT, RoBERTa, ...)"
        )
    return path


def _check_same_tokenizer(config: dict, names: list[str]) -> None:
    """Models compared token by token (alignment.sizes) must share a tokenizer: the embedded family
    shares one; a hub or path model has its own, so it is compared only with models of the same source."""
    sources = {}
    for name in names:
        entry = model_entry(config, name)
        if entry["source"] == UNTRAINED_TWIN:
            entry = model_entry(config, entry["twin_of"])
        sources[name] = "the embedded family's tokenizer" if entry["source"] == TRAIN else entry["source"]
    if len(set(sources.values())) > 1:
        listed = "; ".join(f"{n}: {s}" for n, s in sources.items())
        raise ConfigError(
            "config key 'alignment.sizes': these models do not share a tokenizer, so their single-token profiles "
            f"cannot be compared token by token ({listed}); list models of one family"
        )


def model_shape(config: dict, entry: dict) -> dict | None:
    """Layers, MLP width and vocabulary size of a model, known before any job runs: from the
    config for the embedded family, from the module tree of config.json for a local or cached hub
    model; None when neither has it yet (check_hub_source says why)."""
    if entry["source"] == UNTRAINED_TWIN:
        entry = model_entry(config, entry["twin_of"])
    if entry["source"] == TRAIN:
        from lmfeatures.lm.architectures import context_free_mlp_layers
        from lmfeatures.lm.models import family_config

        vocab, context = config["tokenizer"]["vocab_size"], config["training"]["context_length"]
        return {
            "n_layers": entry["n_layers"],
            "d_mlp": entry["d_mlp"],
            "d_model": entry["d_model"],
            "vocab_size": vocab,
            "n_positions": context,
            "context_free": context_free_mlp_layers(family_config(entry, vocab, context, eos_id=0)),
        }
    path = saved_model_dir(entry["source"])
    return None if path is None else hub_model_shape(entry, path, f"models[{config['models'].index(entry)}]")


POSITION_KEYS = ("max_position_embeddings", "n_positions", "seq_length")  # a config's context length, by name


def hub_model_shape(entry: dict, path: Path, where: str = "models") -> dict:
    """model_shape() of a saved model, read from its module tree built on the meta device (no
    weights loaded): the hook points are discovered as HookedModel will, so a model without
    neurons, or whose blocks cannot be found, stops here with the key to set (`where`: the config
    key of the model's entry, e.g. "models[3]")."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmfeatures.lm.architectures import (
        ArchitectureError,
        arch_spec,
        context_free_mlp_layers,
        mlp_width,
        submodule,
    )

    cfg = AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    d_model = model.get_input_embeddings().weight.shape[1]
    try:
        spec, _ = arch_spec(model, entry.get("module_paths"))
        blocks = submodule(model, "blocks", spec.blocks)
        mlp_out = None if spec.no_neurons else submodule(blocks[0], "mlp_out", spec.mlp_out)
        d_mlp = None if mlp_out is None else mlp_width(mlp_out, spec.mlp_out, d_model)
    except (ArchitectureError, TypeError) as err:
        key = err.config_key(where) if isinstance(err, ArchitectureError) else where
        raise ConfigError(f"config key {key!r} ({entry['name']}): {err}") from None
    if spec.no_neurons:
        raise ConfigError(
            f"config key {where + '.module_paths.mlp_out'!r} ({entry['name']}): this {cfg.model_type} model is "
            f"{spec.no_neurons}. The stages read MLP neurons; its 'resid.L' and 'embed' hooks still work from Python "
            "(lmfeatures.lm.hooks.HookedModel). If its blocks do hold a dense MLP, set module_paths.mlp_out"
        )
    n_positions = next((getattr(cfg, k) for k in POSITION_KEYS if isinstance(getattr(cfg, k, None), int)), None)
    return {
        "n_layers": len(blocks),
        "d_mlp": d_mlp,
        "d_model": d_model,
        "vocab_size": model.get_input_embeddings().weight.shape[0],
        "n_positions": n_positions,
        "context_free": context_free_mlp_layers(cfg),
    }


def _check_neurons(config: dict, stage: str | None, shapes: dict[str, dict | None]) -> None:
    """Every explicit neuron and listed layer of a stage's selection exists in every model it is
    used on: `shapes` maps those models' names to model_shape()."""
    spec = neuron_spec(config, stage)
    overrides = config[stage].get("neurons", {}) if stage else {}
    origin = {f: f"{stage}.neurons.{f}" if f in overrides else f"neurons.{f}" for f in ("explicit", "layers")}
    for name, shape in shapes.items():
        if shape is None:
            continue
        n_layers, d_mlp = shape["n_layers"], shape["d_mlp"]
        for i, text in enumerate(spec.get("explicit", [])):
            layer, index = (int(p) for p in text.split("."))
            if layer >= n_layers:
                raise ConfigError(
                    f"config key '{origin['explicit']}[{i}]': neuron {text}: layer {layer} is out of range for model "
                    f"{name} ({n_layers} layers, 0-{n_layers - 1})"
                )
            if d_mlp is not None and index >= d_mlp:
                raise ConfigError(
                    f"config key '{origin['explicit']}[{i}]': neuron {text}: index {index} is out of range for model "
                    f"{name} ({d_mlp} neurons per layer, 0-{d_mlp - 1})"
                )
        for i, layer in enumerate(spec.get("layers") or []):
            if layer >= n_layers:
                raise ConfigError(
                    f"config key '{origin['layers']}[{i}]': layer {layer} is out of range for model {name} "
                    f"({n_layers} layers, 0-{n_layers - 1})"
                )


def check_ranges(config: dict) -> None:
    """Values the config already determines, checked before any job runs: neurons and layers
    against each model's shape, epo.top_k against the vocabulary."""
    shapes = {m["name"]: model_shape(config, m) for m in config["models"]}  # each config.json read once
    _check_neurons(config, None, shapes)
    for stage in STAGES_ON_MODELS:
        if config.get(stage, {}).get("models"):
            _check_neurons(config, stage, {name: shapes[name] for name in config[stage]["models"]})
    epo = config.get("epo", {})
    if epo.get("models"):
        for name in epo["models"]:
            shape = shapes[name]
            if shape is not None and epo["top_k"] >= shape["vocab_size"]:
                raise ConfigError(
                    f"config key 'epo.top_k': {epo['top_k']} is not below the vocabulary of model {name} "
                    f"({shape['vocab_size']} tokens, special tokens included); use a smaller top_k"
                )
    _check_alignment_ranges(config.get("alignment", {}), shapes)
    _check_sae(config, shapes)


def check_device(config: dict) -> None:
    """A CUDA device the config names exists on this machine."""
    if config["device"].startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"config key 'device': {config['device']!r}, but CUDA is not available here; use auto or cpu"
            )
        index = int(config["device"].partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"config key 'device': {config['device']!r}, but this machine has {torch.cuda.device_count()} "
                f"CUDA devices (cuda:0-{torch.cuda.device_count() - 1})"
            )


def _check_alignment_ranges(alignment: dict, shapes: dict[str, dict | None]) -> None:
    """Feature indices within every alignment model's width; input lengths within its context; at
    least one model with two layers to compare; two sizes or none."""
    if len(alignment.get("sizes", [])) == 1:
        raise ConfigError(
            f"config key 'alignment.sizes': lists one model ({alignment['sizes'][0]}), so no sizes can be compared; "
            "list two models of one family or more, or none ([]) to skip the comparison"
        )
    known = [shapes[n]["n_layers"] for n in alignment.get("models", []) if shapes[n] is not None]
    if known and len(known) == len(alignment["models"]) and max(known) < 2:
        raise ConfigError(
            "config key 'alignment.models': every listed model has one layer, so no two layers can be compared; "
            "list a model with two layers or more"
        )
    for name in alignment.get("models", []):
        shape = shapes[name]
        if shape is None:
            continue
        width = shape["d_model"] if alignment["kind"] == "resid" else shape["d_mlp"]
        for i, index in enumerate(alignment["features"]):
            if width is not None and index >= width:
                raise ConfigError(
                    f"config key 'alignment.features[{i}]': feature {index} is out of range for {alignment['kind']}.L "
                    f"of model {name} ({width} dimensions, 0-{width - 1})"
                )
        for key in ("greedy_tokens", "gradient_tokens"):
            if shape["n_positions"] is not None and alignment[key] > shape["n_positions"]:
                raise ConfigError(
                    f"config key 'alignment.{key}': {alignment[key]} tokens do not fit the context of model {name} "
                    f"({shape['n_positions']} positions)"
                )


def scan_shards(config: dict, model: str) -> int:
    """How many jobs scan `model` (scan.shards: one number for every model, or {model: number})."""
    shards = config["scan"]["shards"]
    return shards.get(model, 1) if isinstance(shards, dict) else shards


def sae_run_names(sae: dict) -> list[str]:
    """The checked runs of the `sae:` section, one per seed: A, B, C, ..."""
    return [chr(ord("A") + i) for i in range(len(sae["seeds"]))]


def sae_twin(config: dict) -> str | None:
    """The untrained twin of sae.model that the `untrained` control trains on (None: no such control)."""
    sae = config.get("sae", {})
    if not sae.get("model") or "untrained" not in sae["controls"]:
        return None
    twins = [m["name"] for m in config["models"] if m.get("twin_of") == sae["model"]]
    return twins[0] if twins else None


def sae_runs(config: dict) -> list[tuple[str, str]]:
    """(model, run) of every SAE the config trains: runs A, B, ... of sae.model, "relu-A" when
    sae.relu_run, "random-A", "random-B", ... with the random control, and A, B, ... of the twin
    with the untrained control."""
    sae = config.get("sae", {})
    if not sae.get("model"):
        return []
    names = sae_run_names(sae)
    runs = [(sae["model"], r) for r in names]
    if sae["relu_run"] and sae["architecture"] != "relu":
        runs.append((sae["model"], "relu-A"))
    if "random" in sae["controls"]:
        runs += [(sae["model"], f"random-{r}") for r in names]
    twin = sae_twin(config)
    if twin:
        runs += [(twin, r) for r in names]
    return runs


def _check_sae(config: dict, shapes: dict[str, dict | None]) -> None:
    """sae.model exists, has neurons and the layer; k fits d_sae; the untrained control has a twin."""
    from lmfeatures.sae.proxies import ProxyError, check_proxies

    sae = config.get("sae", {})
    if not sae.get("model"):
        return
    names = [m["name"] for m in config["models"]]
    if sae["model"] not in names:
        raise ConfigError(f"config key 'sae.model': no model named {sae['model']!r} (models: {', '.join(names)})")
    if "untrained" in sae["controls"] and sae_twin(config) is None:
        raise ConfigError(
            f"config key 'sae.controls': 'untrained' needs an untrained twin of {sae['model']} in models "
            f"(add {{name: {sae['model']}-untrained, source: untrained-twin, twin_of: {sae['model']}}}) or drop it"
        )
    try:
        check_proxies(sae["proxies"])
    except ProxyError as err:
        raise ConfigError(f"config key 'sae.proxies': {err}") from None
    shape = shapes.get(sae["model"])
    if shape is None:
        return
    if shape["d_mlp"] is None:
        raise ConfigError(f"config key 'sae.model': {sae['model']} has no MLP neurons to train an SAE on")
    if sae["layer"] >= shape["n_layers"]:
        raise ConfigError(
            f"config key 'sae.layer': layer {sae['layer']} is outside {sae['model']} "
            f"({shape['n_layers']} layers, 0-{shape['n_layers'] - 1})"
        )
    if sae["layer"] in shape["context_free"] and not sae["allow_context_free"]:
        raise ConfigError(
            f"config key 'sae.layer': mlp.{sae['layer']} of {sae['model']} reads the current token alone (its "
            "attention and MLP run in parallel, so nothing has mixed the context in), so its SAE features can "
            "code token identity at most: pick a later layer, or set sae.allow_context_free: true to study it anyway"
        )
    d_sae = sae["expansion"] * shape["d_mlp"]
    if sae["k"] >= d_sae:
        raise ConfigError(
            f"config key 'sae.k': {sae['k']} must be below d_sae = expansion x d_mlp = {d_sae} for {sae['model']}"
        )
    planted = sae["planted"]
    planted_width = planted["expansion"] * shape["d_mlp"]
    if planted_width <= max(planted["directions"] + planted["background"], sae["k"]):
        raise ConfigError(
            f"config key 'sae.planted.expansion': the planted SAEs' d_sae = {planted_width} (expansion x d_mlp) must "
            f"exceed both the planted directions + background ({planted['directions'] + planted['background']}) and "
            f"sae.k ({sae['k']}); raise it or plant fewer directions"
        )


def neuron_spec(config: dict, stage: str | None = None) -> dict:
    """The neuron selection a stage uses: the shared `neurons:` section with the stage's own
    `neurons:` overrides (e.g. `epo.neurons`) on top; fields of lmfeatures.scan.neurons.NeuronSpec."""
    return {**config["neurons"], **(config[stage].get("neurons", {}) if stage else {})}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def fill_defaults(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Check `config` against the schema and fill its defaults in place (no model is built); returns it."""
    from snakemake.utils import validate

    check_schema(config, load_schema(schema_path))
    validate(config, str(schema_path), set_default=True)
    return config


def validate_config(
    config: dict,
    schema_path: str | Path = SCHEMA_PATH,
    *,
    devices_here: bool = True,
    sources: ConfigSources | None = None,
) -> dict:
    """Check `config` in place and fill schema defaults; returns it. devices_here=False skips
    check_device, for a process that does not run the jobs; with `sources`, an error about a key
    the config files do not set says where its value came from."""
    try:
        fill_defaults(config, schema_path)
        check_models(config)
        check_corpus(config)
        check_stages(config)
        check_ranges(config)
        if devices_here:
            check_device(config)
    except ConfigError as err:
        key = KEY_PATTERN.match(str(err))
        origin = sources.origin(key.group(1)) if sources and key else None
        if origin:
            raise ConfigError(f"{err} ({origin})") from None
        raise
    return config


def read_config_file(path: str | Path) -> dict:
    """A YAML config file as a dict; ConfigError naming the file, line and column of a syntax error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config file {path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})"
        ) from None


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Read a YAML config file and validate it (for use outside Snakemake, e.g. the probe CLI)."""
    config = read_config_file(path)
    return validate_config(copy.deepcopy(config), schema_path, sources=ConfigSources([Path(path)]))


def main(argv: list[str]) -> int:
    """`python -m lmfeatures check-config FILE`: what a run would say about FILE, before any job
    (and where Snakemake's own loader only says "not valid JSON or YAML", the line and column)."""
    if len(argv) != 1:
        print("usage: python -m lmfeatures check-config FILE", file=sys.stderr)
        return 2
    try:
        config = load_config(argv[0])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{argv[0]}: valid ({len(config['models'])} models: {', '.join(m['name'] for m in config['models'])})")
    return 0


def model_entry(config: dict, name: str) -> dict:
    for m in config["models"]:
        if m["name"] == name:
            return m
    raise ConfigError(
        f"no model named {name!r} in the config (models: {', '.join(m['name'] for m in config['models'])})"
    )
