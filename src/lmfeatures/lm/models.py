"""The model zoo: build the embedded family, load any model the config names, fail fast on missing ones.

A config model entry has a ``name`` and a ``source``:
    train            a model of the embedded family, trained in the DAG (size fields given)
    untrained-twin   the seeded random initialisation of the trained model named by ``twin_of``
    anything else    a Hugging Face hub id (``gpt2``, ``EleutherAI/pythia-70m``) or a local directory
Whatever the source, the DAG saves the model with ``save_pretrained`` under ``results/models/{name}``,
so every stage loads every model through :func:`lmfeatures.store.models.load_model` the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

FAMILY_ARCHITECTURES = ("gpt_neox", "gpt2", "llama")


class ModelUnavailable(RuntimeError):
    """A configured model cannot be loaded from anywhere; the message says how to provide it."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {device} was requested but CUDA is not available; use device: auto or cpu")
    return torch.device(device)


def family_config(entry: dict, vocab_size: int, context_length: int, eos_id: int):
    """A transformers config for one size of the embedded family (entry: the config's model entry)."""
    arch = entry.get("architecture", "gpt_neox")
    d, n_layers, n_heads, d_mlp = entry["d_model"], entry["n_layers"], entry["n_heads"], entry["d_mlp"]
    common = dict(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, tie_word_embeddings=False)
    if arch == "gpt_neox":
        from transformers import GPTNeoXConfig

        # Pythia's choices: parallel residual, partial rotary embeddings, GELU.
        return GPTNeoXConfig(
            hidden_size=d,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            intermediate_size=d_mlp,
            max_position_embeddings=context_length,
            rotary_pct=0.25,
            use_parallel_residual=True,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            n_embd=d,
            n_layer=n_layers,
            n_head=n_heads,
            n_inner=d_mlp,
            n_positions=context_length,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=d,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_heads,
            intermediate_size=d_mlp,
            max_position_embeddings=context_length,
            **common,
        )
    raise ValueError(f"model {entry['name']}: architecture {arch!r} is not one of {FAMILY_ARCHITECTURES}")


def init_model(config, seed: int) -> PreTrainedModel:
    """Seeded random initialisation; the same seed gives the same weights (trained model's start = twin)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model.float().eval()


def n_parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())


def check_hub_source(name: str, source: str) -> None:
    """Fail at once, before any compute, if a hub id / path source can be had from nowhere."""
    path = Path(source).expanduser()
    if path.exists() or source.startswith(("/", ".", "~")):  # a local directory, not an "org/name" hub id
        if not (path / "config.json").is_file():
            raise ModelUnavailable(
                f"model {name!r}: local path {str(path)!r} has no config.json; "
                "point source at a directory written by save_pretrained"
            )
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        reachable = False
    else:
        from huggingface_hub import HfApi

        try:
            HfApi().model_info(source, timeout=10)
            reachable = True
        except Exception:  # no network, unknown id, gated repo: all mean we cannot fetch it
            reachable = False
    if not reachable:
        raise ModelUnavailable(
            f"model {name!r}: {source!r} is neither a local directory nor in the Hugging Face cache, "
            "and the hub cannot be reached. Provide it by (1) setting source to a local directory saved "
            "with save_pretrained, (2) pointing HF_HOME at a cache that holds it, or (3) connecting to the "
            "network once so it can be downloaded"
        )


def load_hub_model(name: str, source: str, dtype: torch.dtype = torch.float32):
    """Load a hub id or local path (model + tokenizer); raises ModelUnavailable with instructions."""
    check_hub_source(name, source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:
        raise ModelUnavailable(f"model {name!r}: could not load {source!r}: {str(err).splitlines()[0]}") from err
    return model.eval(), tokenizer


def load_fill_mask_tokenizer(path: Path):
    """The tokenizer of a saved fill-mask model (read first: it decides whether the model is usable)."""
    return AutoTokenizer.from_pretrained(str(path))


def load_fill_mask_model(path: Path, device: torch.device) -> PreTrainedModel:
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(str(path)).to(device).eval()


def describe(model: PreTrainedModel, name: str | None = None) -> dict:
    """The model-table row: shapes read through the activation layer, so any architecture works.
    Building it runs the activation layer's self-check: a model whose hook points do not check out
    stops here, before any stage runs on it, with an ArchitectureError naming `name`."""
    from lmfeatures.lm.architectures import ArchitectureError
    from lmfeatures.lm.hooks import HookedModel

    try:
        hooked = HookedModel(model)
    except ArchitectureError as err:
        raise ArchitectureError(f"model {name!r}: {err}") from None
    return {
        "architecture": model.config.model_type,
        "hook_points": hooked.spec.__dict__,
        "n_layers": hooked.n_layers,
        "d_model": hooked.d_model,
        "d_mlp": hooked.d_mlp,
        "vocab_size": hooked.vocab_size,
        "parameters": n_parameters(model),
    }
