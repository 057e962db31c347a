"""What a job asks the scheduler for, sized from the models it loads (known before any job runs).

A job's memory is a fixed start-up cost plus bytes per parameter of the models it loads; its time
limit is the rule's base limit, stretched for models above TIME_REFERENCE_PARAMETERS. Parameter
counts come from the module tree built on the meta device (no weights read): from the config's
sizes for the embedded family, from config.json for a local or cached hub model.
"""

from __future__ import annotations

import math

from lmfeatures.config import TRAIN, UNTRAINED_TWIN, ConfigError, model_entry, saved_model_dir

START_MB = 2500  # python, torch, transformers and a stage's data (a micro-model job peaks near 1 GB)
FORWARD_BYTES = 8  # per parameter, inference: fp32 weights and about as much again in activations
TRAIN_BYTES = 24  # per parameter, training: weights, gradients, two Adam moments, and activations
UNKNOWN_PARAMETERS = 1_000_000_000  # a hub model not in the local cache yet is sized as 1B
TIME_REFERENCE_PARAMETERS = 100_000_000  # a rule's base time limit holds up to this size, then grows linearly
MAX_RUNTIME_MINUTES = 7 * 24 * 60


def model_parameters(config: dict, name: str) -> int:
    """Parameter count of a configured model; UNKNOWN_PARAMETERS for a hub model that is not in the
    local cache yet (hub_model fetches it)."""
    from transformers import AutoConfig

    from lmfeatures.lm.models import family_config

    entry = model_entry(config, name)
    if entry["source"] == UNTRAINED_TWIN:
        entry = model_entry(config, entry["twin_of"])
    if entry["source"] == TRAIN:
        vocab, context = config["tokenizer"]["vocab_size"], config["training"]["context_length"]
        return _count(family_config(entry, vocab, context, eos_id=0))
    path = saved_model_dir(entry["source"])
    return UNKNOWN_PARAMETERS if path is None else _count(AutoConfig.from_pretrained(str(path)))


def proposer_parameters(config: dict) -> int:
    """Parameter count of pruning's fill-mask proposer when it is a model of its own (else 0)."""
    from transformers import AutoConfig

    source = config["prune"]["proposer"]
    if source == "model":
        return 0
    return _count(AutoConfig.from_pretrained(str(saved_model_dir(source))), masked_lm=True)


def _count(model_config, masked_lm: bool = False) -> int:
    """Parameters of the model a transformers config describes, built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from lmfeatures.lm.models import n_parameters

    auto = AutoModelForMaskedLM if masked_lm else AutoModelForCausalLM
    with torch.device("meta"):
        return n_parameters(auto.from_config(model_config))


def mem_mb(parameters: int, *, training: bool = False) -> int:
    """Memory request of a job loading models with `parameters` in all, rounded up to 500 MB."""
    per_parameter = TRAIN_BYTES if training else FORWARD_BYTES
    mb = START_MB + parameters * per_parameter / 1e6
    return int(math.ceil(mb / 500) * 500)


def runtime_minutes(parameters: int, base_minutes: int) -> int:
    """Time limit of a job: `base_minutes` up to TIME_REFERENCE_PARAMETERS, linear above."""
    scale = max(1.0, parameters / TIME_REFERENCE_PARAMETERS)
    return min(int(math.ceil(base_minutes * scale)), MAX_RUNTIME_MINUTES)


def gpu_requests(requested: dict[str, dict]) -> list[str]:
    """The GPU requests among resource settings, as "where: key=value" lines. `requested` maps where
    a setting comes from (e.g. "default-resources", "set-resources train_model") to its raw values."""
    found = []
    for where, values in requested.items():
        for key, value in values.items():
            asks = (key == "gpu" and str(value) not in ("0", "None")) or (
                key in ("gres", "slurm_extra") and "gpu" in str(value)
            )
            if asks:
                found.append(f"{where}: {key}={value}")
    return found


def check_gpu_requests(device: str, requested: dict[str, dict]) -> None:
    """A GPU asked of the scheduler while the config runs everything on the CPU is a mistake either
    way (idle GPUs, or a forgotten `device:`): ConfigError saying both fixes."""
    asks = gpu_requests(requested)
    if asks and device == "cpu":
        raise ConfigError(
            f"config key 'device': 'cpu', but the resources ask for GPUs ({'; '.join(asks)}): set device: cuda "
            "(or auto) to use them, or drop the GPU request"
        )


def check_partitions(requested: dict[str, dict], available: list[str]) -> None:
    """Every slurm_partition asked for exists (`available`: sinfo's partition names): ConfigError
    naming the missing one and the ones there are, before any job is submitted."""
    for where, values in requested.items():
        partitions = str(values.get("slurm_partition") or "").strip("'\"")
        missing = [p for p in partitions.split(",") if p and p not in available]  # sbatch takes a list
        if missing:
            raise ConfigError(
                f"{where}: slurm_partition={partitions}, but this cluster has no partition {missing[0]!r} "
                f"(sinfo lists: {', '.join(available) or 'none'})"
            )
