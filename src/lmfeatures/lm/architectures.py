"""Where a causal LM's hook points live: found from its module tree, with a table and the config as overrides.

`HookedModel` (hooks.py) reads activations at six places of a model, given as dotted module paths
(an `ArchSpec`): the token embedding, the ModuleList of blocks, in each block the MLP's output
projection and its activation function, the final norm and the unembedding. `arch_spec` resolves
them for any model, in this order of precedence:

1. `module_paths`: paths a user gives (the config key `models[].module_paths`, or the
   `module_paths=` argument of HookedModel), field by field;
2. `ARCHITECTURES`: a table keyed by `config.model_type`, for anything discovery gets wrong;
3. discovery (`discover`), from the module tree and the config:
     embed       model.get_input_embeddings()
     unembed     model.get_output_embeddings()
     blocks      the ModuleList of `num_hidden_layers` blocks (the one holding most parameters)
     mlp_out     in a block, outside attention and state-space mixers, the Linear or Conv1D into
                 d_model from another width (one under an MLP-like name first, then the widest):
                 its input is the neuron activations
     mlp_act     in mlp_out's parent module, the activation-function module: its input is the
                 pre-activation (None where the activation is a plain function)
     final_norm  not found here: HookedModel traces it at load (the module between the last
                 block's output and the unembedding's input; "" when there is none)

Discovery needs only the module tree, so it also runs on a model built on the meta device
(config validation does that, before any weights are loaded). Blocks with experts (mixture of
experts) or without an MLP get `no_neurons`: the reason "neuron i of layer L" has no single
meaning for them; their `resid` and `embed` hooks still work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class ArchSpec:
    """Where the hook points live: dotted module paths from the *CausalLM model root."""

    blocks: str  # ModuleList of transformer blocks, e.g. "gpt_neox.layers"
    # path *inside a block* to the MLP output projection; its INPUT is the neuron activations,
    # e.g. "mlp.dense_4h_to_h". None: no neurons (see no_neurons)
    mlp_out: str | None
    embed: str  # token embedding nn.Embedding, e.g. "gpt_neox.embed_in"
    # final norm before unembedding, e.g. "gpt_neox.final_layer_norm"; "" for none; None: trace it at load
    final_norm: str | None
    unembed: str  # unembedding (lm head) module, e.g. "lm_head"
    # path *inside a block* to the MLP's activation-function module; its INPUT is the
    # pre-activation (hook mlp_pre.L), e.g. "mlp.act". None: no mlp_pre hook for this architecture.
    mlp_act: str | None = None
    no_neurons: str | None = None  # why mlp / mlp_pre hooks have no meaning here (mixture of experts, no MLP)


MODULE_PATH_KEYS = ("blocks", "mlp_out", "mlp_act", "embed", "final_norm", "unembed")  # config: module_paths

_LLAMA_LIKE = ArchSpec(
    blocks="model.layers",
    mlp_out="mlp.down_proj",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    mlp_act="mlp.act_fn",
)

# Known-good paths; discovery finds the same ones (tests/test_architectures.py checks that).
ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": ArchSpec(
        blocks="transformer.h",
        mlp_out="mlp.c_proj",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        mlp_act="mlp.act",
    ),
    "gpt_neox": ArchSpec(
        blocks="gpt_neox.layers",
        mlp_out="mlp.dense_4h_to_h",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",  # "embed_out" before transformers 5 renamed it
        mlp_act="mlp.act",
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
}


def register_architecture(model_type: str, spec: ArchSpec) -> None:
    """Override discovery for `config.model_type` with a spec (or replace a table entry)."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec must be an ArchSpec, got {type(spec).__name__}")
    ARCHITECTURES[model_type] = spec


class ArchitectureError(ValueError):
    """The hook points of a model cannot be found or do not check out; the message names the key to
    set, and `key` is that module_paths key where one is to blame."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key

    def config_key(self, entry_key: str) -> str:
        """The config key to fix for the model entry at `entry_key` (e.g. "models[3]")."""
        return f"{entry_key}.module_paths.{self.key}" if self.key else entry_key


def _fix(model_type: str, key: str) -> str:
    return (
        f"set models[].module_paths.{key} in the config (a dotted path; mlp_out and mlp_act relative to a "
        f"block), or call lmfeatures.lm.architectures.register_architecture({model_type!r}, ArchSpec(...))"
    )


# Path components that are not the MLP: attention and state-space / recurrent token mixers.
_NOT_MLP = re.compile(r"attn|attention|mixer|mamba|ssm|time_mix", re.IGNORECASE)
_MLP_NAMES = re.compile(r"mlp|ffn|feed_forward|fc|dense_4h", re.IGNORECASE)
_EXPERTS = re.compile(r"expert|moe", re.IGNORECASE)
_ACTIVATION_MODULES = ("transformers.activations", "torch.nn.modules.activation")
_ACTIVATION_NAMES = re.compile(r"gelu|relu|silu|swish|activation", re.IGNORECASE)


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a Linear or Conv1D (gpt2's transposed linear), else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.nf
    return None


def submodule(root: nn.Module, key: str, path: str) -> nn.Module:
    """The module at `path` under `root`, for module_paths key `key`; ArchitectureError if there is none."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise ArchitectureError(f"module_paths.{key}={path!r} is not a module of this model", key=key) from None


def mlp_width(mlp_out: nn.Module, path: str, d_model: int) -> int:
    """d_mlp of a block whose MLP output projection is `mlp_out` (at module_paths.mlp_out=`path`):
    its input width. The projection must map into the residual stream, whose width is d_model."""
    shape = linear_shape(mlp_out)
    if shape is None:
        raise ArchitectureError(
            f"module_paths.mlp_out={path!r} is a {type(mlp_out).__name__}, not a Linear or Conv1D", key="mlp_out"
        )
    if shape[1] != d_model:
        raise ArchitectureError(
            f"module_paths.mlp_out={path!r} maps {shape[0]} features to {shape[1]}, not into the residual stream "
            f"({d_model}): name the MLP's output projection (e.g. mlp.down_proj, mlp.c_proj)",
            key="mlp_out",
        )
    return shape[0]


def _path_of(model: nn.Module, target: nn.Module | None) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def _blocks(model: nn.Module, n_layers: int | None) -> str | None:
    lists = [
        (sum(p.numel() for p in m.parameters()), name)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) and (n_layers is None or len(m) == n_layers)
    ]
    return max(lists)[1] if lists else None


def _mlp_out(block: nn.Module, d_model: int) -> str | None:
    candidates = []
    for name, module in block.named_modules():
        shape = linear_shape(module)
        if shape and shape[1] == d_model and shape[0] != d_model and not _NOT_MLP.search(name):
            candidates.append((bool(_MLP_NAMES.search(name)), shape[0], name))  # MLP-named first, then widest
    return max(candidates)[2] if candidates else None


def _mlp_act(block: nn.Module, mlp_out: str) -> str | None:
    parent = mlp_out.rpartition(".")[0]
    for name, module in block.get_submodule(parent).named_modules():
        plain_function = not any(True for _ in module.parameters()) and _ACTIVATION_NAMES.search(type(module).__name__)
        if name and (type(module).__module__ in _ACTIVATION_MODULES or plain_function):
            return f"{parent}.{name}" if parent else name
    return None


def _experts(blocks: nn.ModuleList) -> str | None:
    for block in blocks:
        for name, _ in block.named_modules():
            if _EXPERTS.search(name.rpartition(".")[2]):
                return name
    return None


def discover(model: nn.Module) -> ArchSpec:
    """Find the hook points of `model` from its module tree and config (see module docstring).

    Raises ArchitectureError naming the module_paths key to set when the embedding, the
    unembedding or the blocks cannot be found. Runs on a meta-device model as well."""
    model_type = model.config.model_type
    embed, unembed = _path_of(model, model.get_input_embeddings()), _path_of(model, model.get_output_embeddings())
    for key, path, getter in (("embed", embed, "input"), ("unembed", unembed, "output")):
        if path is None:
            raise ArchitectureError(f"{model_type}: get_{getter}_embeddings() gives no module; {_fix(model_type, key)}")
    n_layers = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    blocks = _blocks(model, n_layers)
    if blocks is None:
        raise ArchitectureError(
            f"{model_type}: no ModuleList of {n_layers} blocks (num_hidden_layers) found; {_fix(model_type, 'blocks')}"
        )
    block_list = model.get_submodule(blocks)
    d_model = model.get_input_embeddings().weight.shape[1]
    experts = _experts(block_list)
    if experts is not None:
        reason = (
            f"a mixture-of-experts model ({experts!r} in its blocks): each token passes through a few of "
            "several expert MLPs, so 'neuron i of layer L' has no single meaning"
        )
        return ArchSpec(blocks, None, embed, None, unembed, None, no_neurons=reason)
    mlp_out = _mlp_out(block_list[0], d_model)
    if mlp_out is None:
        reason = f"no MLP found in its blocks (no Linear into d_model={d_model} from another width outside attention)"
        return ArchSpec(blocks, None, embed, None, unembed, None, no_neurons=reason)
    return ArchSpec(blocks, mlp_out, embed, None, unembed, _mlp_act(block_list[0], mlp_out))


def arch_spec(model: nn.Module, module_paths: dict | None = None) -> tuple[ArchSpec, frozenset[str]]:
    """The spec HookedModel uses: module_paths > ARCHITECTURES[model_type] > discover(model).
    Also returns the fields a person gave (module_paths or the table), which are checked, never
    silently replaced."""
    model_type = model.config.model_type
    given = dict(module_paths or {})
    unknown = sorted(set(given) - set(MODULE_PATH_KEYS))
    if unknown:
        raise ArchitectureError(
            f"module_paths: unknown key {unknown[0]!r}; keys are {', '.join(MODULE_PATH_KEYS)}", key=unknown[0]
        )
    if model_type in ARCHITECTURES:
        base, stated = ARCHITECTURES[model_type], set(MODULE_PATH_KEYS)
    else:
        base, stated = discover(model), set()
    spec = replace(base, **given)
    if given.get("mlp_out") and spec.no_neurons:  # the user names the MLP: trust it, the check verifies it
        spec = replace(spec, no_neurons=None)
    return spec, frozenset(stated | set(given))


# model_type -> whether a config's blocks run attention and the MLP in parallel on the same input
# (GPT-J's design, kept by GPT-NeoX / Pythia, Phi, some Falcons): then block 0's MLP reads only the
# normed token embedding
_PARALLEL_BLOCKS = {
    "gpt_neox": lambda c: bool(getattr(c, "use_parallel_residual", True)),
    "gptj": lambda c: True,
    "phi": lambda c: True,
    "falcon": lambda c: bool(getattr(c, "parallel_attn", False) or getattr(c, "new_decoder_architecture", False)),
}


def context_free_mlp_layers(config) -> frozenset[int]:
    """The MLP layers whose neurons are a function of the current token alone, from a transformers
    config: {0} for models with parallel attention and MLP (nothing has mixed the context in before
    block 0's MLP), else none. A pattern of context tokens can at best tie a token lookup there."""
    parallel = _PARALLEL_BLOCKS.get(config.model_type)
    return frozenset({0}) if parallel is not None and parallel(config) else frozenset()
