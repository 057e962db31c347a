"""One way to read activations out of any Hugging Face causal LM.

Every experiment stage reads activations through `HookedModel`, so no other code
touches architecture-specific attributes such as `model.gpt_neox.layers`. Hook
points are named in the spirit of TransformerLens:

    embed    token embeddings, the output of the token-embedding module
             [batch, pos, d_model]. For gpt2 this excludes the learned position
             embeddings, which are a separate module.
    mlp_pre.L  the MLP's pre-activations of block L: the *input* of its activation
             function [batch, pos, d_mlp], i.e. W_in x (+ b) for a plain MLP and
             gate(x) for a gated one. Monotone in the neuron where the activation
             is, so optimisers follow its gradient (GELU's is not, below ~ -0.75).
    mlp.L    the neuron activations of block L: the *input* of the MLP output
             projection [batch, pos, d_mlp], i.e. act(W_in x) for a plain MLP
             and act(gate(x)) * up(x) for a gated one (llama family).
    resid.L  the residual stream after block L, the block's output
             [batch, pos, d_model].

In the order the forward pass produces them: embed, mlp_pre.0, mlp.0, resid.0, mlp_pre.1, ...

Where those modules live differs per architecture; an `ArchSpec` records it as
dotted paths, and `ARCHITECTURES` maps `config.model_type` to its spec. Support
for another architecture is one `register_architecture` call away.

    hooked = HookedModel(model)
    acts = hooked.run(["mlp.3", "resid.3"], input_ids=ids)  # stops after block 3
    acts["mlp.3"].shape  # [batch, pos, d_mlp]
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class ArchSpec:
    """Where the hook points live in one architecture: dotted module paths from the *CausalLM model root."""

    blocks: str  # ModuleList of transformer blocks, e.g. "gpt_neox.layers"
    # path *inside a block* to the MLP output projection; its INPUT is the neuron activations,
    # e.g. "mlp.dense_4h_to_h"
    mlp_out: str
    embed: str  # token embedding nn.Embedding, e.g. "gpt_neox.embed_in"
    final_norm: str  # final norm before unembedding, e.g. "gpt_neox.final_layer_norm"
    unembed: str  # unembedding (lm head) module, e.g. "lm_head"
    # path *inside a block* to the MLP's activation-function module; its INPUT is the
    # pre-activation (hook mlp_pre.L), e.g. "mlp.act". None: no mlp_pre hook for this architecture.
    mlp_act: str | None = None


_LLAMA_LIKE = ArchSpec(
    blocks="model.layers",
    mlp_out="mlp.down_proj",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    mlp_act="mlp.act_fn",
)

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
    """Teach `HookedModel` a new architecture (or replace a spec), keyed by `config.model_type`."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec must be an ArchSpec, got {type(spec).__name__}")
    ARCHITECTURES[model_type] = spec


class UnsupportedArchitecture(ValueError):
    """The model's `config.model_type` has no `ArchSpec` registered."""

    def __init__(self, model_type: str):
        supported = ", ".join(sorted(ARCHITECTURES))
        super().__init__(
            f"unsupported architecture {model_type!r}; supported model_types: {supported}. "
            f"To add one, call lmfeatures.hooks.register_architecture({model_type!r}, "
            f"ArchSpec(blocks=..., mlp_out=..., embed=..., final_norm=..., unembed=...)) "
            f"with dotted module paths from the model root (mlp_out is relative to a block)."
        )
        self.model_type = model_type


HOOK_KINDS = ("embed", "mlp_pre", "mlp", "resid")  # in forward order within a layer
_HOOK_FORMS = "valid hook names are 'embed', 'mlp_pre.<layer>', 'mlp.<layer>' and 'resid.<layer>', e.g. 'mlp.3'"


def parse_hook(name: str) -> tuple[str, int | None]:
    """Split a hook name into (kind, layer): "mlp.3" -> ("mlp", 3), "embed" -> ("embed", None)."""
    if not isinstance(name, str):
        raise ValueError(f"hook name must be a string, got {name!r}; {_HOOK_FORMS}")
    if name == "embed":
        return "embed", None
    kind, dot, layer = name.partition(".")
    # isdecimal rejects signs, spaces and "" so that "mlp.-1" or "mlp." are errors, not surprises.
    if kind in HOOK_KINDS[1:] and dot and layer.isdecimal() and layer.isascii():
        return kind, int(layer)
    raise ValueError(f"malformed hook name {name!r}; {_HOOK_FORMS}")


def get_module(root: nn.Module, dotted_path: str) -> nn.Module:
    """The submodule at `dotted_path` below `root` ("" is root itself); AttributeError if missing."""
    return root.get_submodule(dotted_path)


def _weight_in_out(proj: nn.Module) -> Tensor:
    """A linear map's weight as [in, out], whatever convention the module stores it in."""
    if isinstance(proj, nn.Linear):
        return proj.weight.T  # nn.Linear stores [out, in]
    if isinstance(proj, Conv1D):
        return proj.weight  # gpt2's Conv1D stores [in, out]
    raise TypeError(f"don't know the weight layout of {type(proj).__name__}; expected nn.Linear or Conv1D")


class _StopForward(Exception):
    """Raised from a hook once every requested activation is captured, to skip the rest of the forward pass."""


class HookedModel:
    """A Hugging Face causal LM with named activation hook points (see module docstring)."""

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.model_type: str = model.config.model_type
        if self.model_type not in ARCHITECTURES:
            raise UnsupportedArchitecture(self.model_type)
        self.spec: ArchSpec = ARCHITECTURES[self.model_type]

        # Resolve every path now, so a wrong spec fails here with its name rather than mid-experiment.
        def resolve(root: nn.Module, field: str, path: str) -> nn.Module:
            try:
                return get_module(root, path)
            except AttributeError as e:
                raise ValueError(
                    f"ArchSpec for {self.model_type!r} does not match the model: {field}={path!r} not found ({e})"
                ) from None

        self._blocks = resolve(model, "blocks", self.spec.blocks)
        self._embed = resolve(model, "embed", self.spec.embed)
        self._final_norm = resolve(model, "final_norm", self.spec.final_norm)
        self._unembed = resolve(model, "unembed", self.spec.unembed)
        self._mlp_outs = [resolve(block, "mlp_out", self.spec.mlp_out) for block in self._blocks]
        self._mlp_acts = (
            None if self.spec.mlp_act is None else [resolve(b, "mlp_act", self.spec.mlp_act) for b in self._blocks]
        )

        self.n_layers: int = len(self._blocks)
        self.vocab_size, self.d_model = self.embedding_matrix().shape
        self.d_mlp: int = _weight_in_out(self._mlp_outs[0]).shape[0]

    @property
    def device(self) -> torch.device:
        """Where inputs must live: the device of the token embedding."""
        return self._embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the weights (and so of activations and inputs_embeds)."""
        return self._embed.weight.dtype

    def check_hook(self, name: str) -> tuple[str, int | None]:
        """Parse `name` and check its layer exists in this model; returns (kind, layer)."""
        kind, layer = parse_hook(name)
        if layer is not None and layer >= self.n_layers:
            raise ValueError(
                f"layer {layer} is out of range: this {self.model_type} model has "
                f"{self.n_layers} layers (0-{self.n_layers - 1})"
            )
        if kind == "mlp_pre" and self._mlp_acts is None:
            raise ValueError(
                f"hook {name!r}: the ArchSpec of {self.model_type!r} names no mlp_act module; give "
                "mlp_act (the activation function's module inside a block) to register_architecture"
            )
        return kind, layer

    def run(
        self,
        hooks: Sequence[str],
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        return_logits: bool = False,
        past_key_values=None,
    ) -> dict[str, Tensor]:
        """Forward pass that returns the requested activations.

        Give exactly one of input_ids [batch, pos] or inputs_embeds [batch, pos, d_model].
        Returns {hook: [batch, pos, dim]} for exactly the requested hooks, plus
        "logits" [batch, pos, vocab] if return_logits. Without logits the pass stops
        right after the deepest requested hook, so later blocks never run.

        With `past_key_values` (a transformers Cache, e.g. DynamicCache), the inputs continue
        the cached prefix: positions, activations and logits are those of the continuation,
        and the cache is extended with it (stopping early leaves the later layers' unextended).

        Nothing is detached and no_grad is not applied: callers that only read
        activations should wrap the call in torch.no_grad(); callers that need
        gradients w.r.t. inputs_embeds get them.
        """
        if isinstance(hooks, str):
            raise TypeError(f"hooks must be a sequence of hook names, e.g. [{hooks!r}], not a string")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        names = list(dict.fromkeys(hooks))  # de-duplicated, in request order
        parsed = {name: self.check_hook(name) for name in names}
        if not names and not return_logits:
            return {}

        acts: dict[str, Tensor] = {}
        if inputs_embeds is not None and "embed" in parsed:
            # HF skips the embedding module when given inputs_embeds, so they *are* the embed activation.
            acts["embed"] = inputs_embeds

        # Position of each hook in the forward pass; the deepest one is where we may stop.
        def order(kind: str, layer: int | None) -> tuple[int, int]:
            return (-1, 0) if layer is None else (layer, HOOK_KINDS.index(kind))

        stop_at = None if return_logits else max(names, key=lambda n: order(*parsed[n]))
        if stop_at is not None and stop_at in acts:
            return acts  # only "embed" from inputs_embeds was asked for: nothing to run

        batch, pos = (input_ids if input_ids is not None else inputs_embeds).shape[:2]

        def save(name: str, tensor: Tensor) -> None:
            # Some architectures (e.g. OPT) run their MLP on [batch * pos, dim]; restore [batch, pos, dim].
            acts[name] = tensor.unflatten(0, (batch, pos)) if tensor.dim() == 2 else tensor
            if name == stop_at:
                raise _StopForward

        handles = []
        try:
            for name, (kind, layer) in parsed.items():
                if kind == "embed" and inputs_embeds is None:
                    handles.append(self._embed.register_forward_hook(lambda mod, args, out, name=name: save(name, out)))
                elif kind == "mlp_pre":
                    # The activation function's input is the pre-activation.
                    handles.append(
                        self._mlp_acts[layer].register_forward_pre_hook(
                            lambda mod, args, name=name: save(name, args[0])
                        )
                    )
                elif kind == "mlp":
                    # A pre-hook, because the projection's *input* is the post-activation neuron values.
                    handles.append(
                        self._mlp_outs[layer].register_forward_pre_hook(
                            lambda mod, args, name=name: save(name, args[0])
                        )
                    )
                elif kind == "resid":
                    # Blocks return a tensor in recent transformers, a tuple (hidden, ...) in older ones.
                    handles.append(
                        self._blocks[layer].register_forward_hook(
                            lambda mod, args, out, name=name: save(name, out if isinstance(out, Tensor) else out[0])
                        )
                    )
            try:
                out = self.model(
                    input_ids=input_ids,
                    inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask,
                    past_key_values=past_key_values,
                    use_cache=past_key_values is not None,
                )
                if return_logits:
                    acts["logits"] = out.logits
            except _StopForward:
                pass
        finally:
            for handle in handles:
                handle.remove()

        missing = [name for name in names if name not in acts]
        if missing:  # e.g. a spec pointing at a module the forward pass never calls
            raise RuntimeError(f"hooks {missing} never fired during the forward pass of this {self.model_type} model")
        return {name: acts[name] for name in names} | ({"logits": acts["logits"]} if return_logits else {})

    def embedding_matrix(self) -> Tensor:
        """W_E [vocab, d_model]: row t is token t's embedding (the parameter itself, not a copy)."""
        return self._embed.weight

    def mlp_out_weight(self, layer: int) -> Tensor:
        """W_out [d_mlp, d_model] of block `layer`: mlp.L @ W_out (+ bias) is the MLP's output (a view)."""
        self.check_hook(f"mlp.{layer}")
        return _weight_in_out(self._mlp_outs[layer])

    def unembedding(self) -> Tensor:
        """W_U [d_model, vocab]: final_norm(resid.last) @ W_U (+ bias) are the logits (a view)."""
        return _weight_in_out(self._unembed)

    def folded_unembedding(self) -> Tensor:
        """W_U with the final norm's elementwise scale folded in, diag(w) @ W_U [d_model, vocab]
        (TransformerLens's fold_ln): how a direction written to the residual stream moves the
        logits, up to the norm's centring and its division by the stream's scale. A norm without
        a weight leaves W_U as it is."""
        weight = getattr(self._final_norm, "weight", None)
        w_u = self.unembedding()
        return w_u if weight is None else weight[:, None] * w_u

    def final_norm(self) -> nn.Module:
        """The norm applied to the last residual stream before unembedding."""
        return self._final_norm

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings [batch, pos, d_model] of input_ids [batch, pos], as the model computes them."""
        return self._embed(input_ids)
