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

Where those modules live differs per architecture; `lmfeatures.lm.architectures` finds them for
any causal LM (a table and the config's `module_paths` override what it finds), and
`HookedModel` verifies them on random tokens when it is built: a model whose hook points do not
check out stops there with one line naming the hook and the key to set.

    hooked = HookedModel(model)
    acts = hooked.run(["mlp.3", "resid.3"], input_ids=ids)  # stops after block 3
    acts["mlp.3"].shape  # [batch, pos, d_mlp]
"""

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from lmfeatures.lm.architectures import ArchitectureError, ArchSpec, arch_spec, mlp_width, submodule

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


def _weight_in_out(proj: nn.Module) -> Tensor:
    """A linear map's weight as [in, out], whatever convention the module stores it in."""
    if isinstance(proj, nn.Linear):
        return proj.weight.T  # nn.Linear stores [out, in]
    return proj.weight  # gpt2's Conv1D stores [in, out] (architectures.linear_shape admits only these two)


class _StopForward(Exception):
    """Raised from a hook once every requested activation is captured, to skip the rest of the forward pass."""


def _first_tensor(args: tuple, kwargs: dict | None = None) -> Tensor | None:
    """A module's main input or output: the first tensor among its positional (then keyword) values."""
    for value in (*args, *(kwargs or {}).values()):
        if isinstance(value, Tensor):
            return value
    return None


# Post-processing of the unembedding's output that configs declare: (config attribute, logits -> logits).
LOGIT_TRANSFORMS = (
    ("final_logit_softcapping", lambda logits, cap: cap * torch.tanh(logits / cap)),  # gemma2, gemma3
    ("logit_scale", lambda logits, scale: logits * scale),  # cohere
    ("logits_scaling", lambda logits, scale: logits / scale),  # granite
)


class HookedModel:
    """A Hugging Face causal LM with named activation hook points (see module docstring).

    `module_paths` (default: the saved config's `lmfeatures_module_paths`, which the models
    stage writes from the YAML key `models[].module_paths`) overrides where the hook points are;
    see lmfeatures.lm.architectures. The hook points are verified on a few random tokens when it is
    built: ArchitectureError names the hook that failed and the key to set.
    """

    def __init__(self, model: PreTrainedModel, module_paths: dict | None = None):
        self.model = model
        self.model_type: str = model.config.model_type
        if module_paths is None:
            module_paths = getattr(model.config, "lmfeatures_module_paths", None)
        spec, self._given = arch_spec(model, module_paths)
        self._overridden = frozenset(module_paths or {})  # the paths a person gave for this model

        # Resolve every path now, so a wrong spec fails here with its name rather than mid-experiment.
        def resolve(root: nn.Module, key: str, path: str) -> nn.Module:
            try:
                return submodule(root, key, path)
            except ArchitectureError as err:
                raise ArchitectureError(f"{self.model_type}: {err}", key=key) from None

        self._blocks = resolve(model, "blocks", spec.blocks)
        self._embed = resolve(model, "embed", spec.embed)
        self._unembed = resolve(model, "unembed", spec.unembed)
        self.n_layers: int = len(self._blocks)
        self.vocab_size, self.d_model = self.embedding_matrix().shape
        self._mlp_outs = self._mlp_acts = None
        self.d_mlp: int | None = None
        if spec.no_neurons is None:
            self._mlp_outs = [resolve(block, "mlp_out", spec.mlp_out) for block in self._blocks]
            self.d_mlp = mlp_width(self._mlp_outs[0], spec.mlp_out, self.d_model)
            if spec.mlp_act is not None:
                self._mlp_acts = [resolve(b, "mlp_act", spec.mlp_act) for b in self._blocks]
        self._final_norm = None if not spec.final_norm else resolve(model, "final_norm", spec.final_norm)
        self.embed_scale = 1.0  # embedding module output / W_E row (gemma3 scales inside the module)
        self._copy_captures = False  # the check sets it for models that change activations in place
        self.spec = spec
        self.spec = self._check()

    @property
    def device(self) -> torch.device:
        """Where inputs must live: the device of the token embedding."""
        return self._embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the weights (and so of activations and inputs_embeds)."""
        return self._embed.weight.dtype

    def _fail(self, hook: str, key: str, what: str) -> ArchitectureError:
        return ArchitectureError(
            f"{self.model_type}: self-check failed for hook {hook!r}: {what}; set models[].module_paths.{key} "
            f"in the config (found: {key}={getattr(self.spec, key)!r})",
            key=key,
        )

    @torch.no_grad()
    def _check(self) -> ArchSpec:
        """Verify the hook points on random tokens, against the model's own forward pass: the
        embedding module gives (a multiple of) W_E's rows; resid.L is what block L+1 reads;
        mlp.L @ W_out (+ bias) is the projection's output; mlp_pre.L has d_mlp units; the final
        norm and unembedding reproduce the logits from resid.last. Traces the final norm (the
        module outside the blocks taking resid.last to the unembedding's input) when the spec has none.
        Returns the spec as verified (a discovered mlp_act that does not check out is dropped)."""
        trace_final_norm = self.spec.final_norm is None
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.vocab_size, (2, 8), generator=gen).to(self.device)
        seen: dict[str, Tensor] = {}
        outside: list[tuple[str, Tensor, Tensor]] = []  # (path, input, output) of modules outside the blocks

        captured: dict[str, Tensor] = {}  # the tensors themselves, to see whether the model later changes them

        def store(name: str, value: Tensor | None) -> None:  # the first call wins: a module may run twice
            if name not in seen:
                seen[name] = None if value is None else value.detach().clone()
                if value is not None:
                    captured[name] = value

        def keep(name):  # a forward pre-hook (with kwargs): the module's input
            return lambda mod, args, kwargs: store(name, _first_tensor(args, kwargs))

        def keep_out(name):  # a forward hook: the module's output
            return lambda mod, args, out: store(name, _first_tensor(out if isinstance(out, tuple) else (out,)))

        handles = [self._embed.register_forward_hook(keep_out("embed"))]
        handles += [self._unembed.register_forward_pre_hook(keep("unembed_in"), with_kwargs=True)]
        handles += [self._unembed.register_forward_hook(keep_out("unembed_out"))]
        for layer, block in enumerate(self._blocks):
            handles.append(block.register_forward_pre_hook(keep(f"block_in.{layer}"), with_kwargs=True))
            handles.append(block.register_forward_hook(keep_out(f"resid.{layer}")))
            if self._mlp_outs:
                handles.append(self._mlp_outs[layer].register_forward_pre_hook(keep(f"mlp.{layer}"), with_kwargs=True))
                handles.append(self._mlp_outs[layer].register_forward_hook(keep_out(f"mlp_out.{layer}")))
            if self._mlp_acts:
                handles.append(
                    self._mlp_acts[layer].register_forward_pre_hook(keep(f"mlp_pre.{layer}"), with_kwargs=True)
                )
        if trace_final_norm:
            inner = {id(m) for m in (*self._blocks.modules(), *self._embed.modules(), *self._unembed.modules())}
            for path, module in self.model.named_modules():
                if path and id(module) not in inner:

                    def record(mod, args, out, path=path):
                        x, y = _first_tensor(args), _first_tensor((out,))
                        if x is not None and y is not None:
                            outside.append((path, x, y))

                    handles.append(module.register_forward_hook(record))
        try:
            logits = self.model(input_ids=ids, use_cache=False).logits
        finally:
            for handle in handles:
                handle.remove()

        # Some models add to a module's output in place (falcon: mlp_output += attention_output); run()
        # must then copy what its hooks capture.
        self._copy_captures = any(
            not torch.equal(seen[k], v) for k, v in captured.items() if k.startswith(("mlp", "resid"))
        )
        spec = self.spec
        last = f"resid.{self.n_layers - 1}"
        missing = [k for k in ("embed", "unembed_in", "unembed_out", last) if seen.get(k) is None]
        if missing:
            key = {"embed": "embed", last: "blocks"}.get(missing[0], "unembed")
            raise self._fail(missing[0], key, "its module never ran in the forward pass")
        w_rows = self.embedding_matrix()[ids]
        if seen["embed"].shape != w_rows.shape:
            raise self._fail("embed", "embed", f"the module's output is not [batch, pos, {self.d_model}]")
        scale = float((seen["embed"] * w_rows).sum() / (w_rows * w_rows).sum())
        if not _close(seen["embed"], scale * w_rows):
            raise self._fail("embed", "embed", "the embedding module's output is not its weight rows")
        self.embed_scale = scale if not _close(torch.tensor(scale), torch.tensor(1.0)) else 1.0
        for layer in range(self.n_layers):
            resid = seen.get(f"resid.{layer}")
            if resid is None or resid.shape != (*ids.shape, self.d_model):
                raise self._fail(f"resid.{layer}", "blocks", f"the block's output is not [batch, pos, {self.d_model}]")
            after = seen.get(f"block_in.{layer + 1}")
            if layer + 1 < self.n_layers and (after is None or not _close(resid, after)):
                raise self._fail(
                    f"resid.{layer}", "blocks", f"block {layer}'s output is not what block {layer + 1} reads"
                )
            if self._mlp_outs:
                acts, out = seen.get(f"mlp.{layer}"), seen.get(f"mlp_out.{layer}")
                if acts is None or out is None:
                    raise self._fail(f"mlp.{layer}", "mlp_out", "the projection never ran in the forward pass")
                bias = getattr(self._mlp_outs[layer], "bias", None)
                direct = acts.reshape(-1, self.d_mlp) @ self.mlp_out_weight(layer) + (0 if bias is None else bias)
                if not _close(direct, out.reshape(direct.shape)):
                    raise self._fail(f"mlp.{layer}", "mlp_out", "mlp.L @ W_out + b is not the projection's output")
            if self._mlp_acts:
                pre = seen.get(f"mlp_pre.{layer}")
                if pre is None or pre.shape[-1] != self.d_mlp:
                    if "mlp_act" in self._given:
                        raise self._fail(f"mlp_pre.{layer}", "mlp_act", f"the module's input has no {self.d_mlp} units")
                    self._mlp_acts, spec = None, replace(spec, mlp_act=None)
        if self._mlp_outs and "mlp_out" in self._overridden:  # the table's paths are tested per architecture
            self._check_mlp_out_feeds_residual(ids, seen)
        if self._mlp_acts and not self._mlp_act_feeds_mlp_out(ids, seen):
            if "mlp_act" in self._given:
                raise self._fail("mlp_pre.0", "mlp_act", "zeroing the module's output leaves mlp_out's input unchanged")
            self._mlp_acts, spec = None, replace(spec, mlp_act=None)
        resid_last, head_in = seen[last], seen["unembed_in"]
        if trace_final_norm:
            if _close(head_in, resid_last):
                spec, self._final_norm = replace(spec, final_norm=""), None
            else:
                found = [p for p, x, y in outside if _close(x, resid_last) and _close(y, head_in)]
                if not found:
                    raise self._fail(last, "final_norm", "no module takes the last block's output to the unembedding")
                spec, self._final_norm = replace(spec, final_norm=found[0]), self.model.get_submodule(found[0])
        direct = self._unembed(self.final_norm()(resid_last))
        for attribute, transform in LOGIT_TRANSFORMS:
            value = getattr(self.model.config.get_text_config(), attribute, None)
            if value:
                direct = transform(direct, value)
        if not _close(direct, logits):
            raise self._fail("logits", "final_norm", "unembed(final_norm(resid.last)) does not give the model's logits")
        return spec

    def _forward_with(self, ids: Tensor, handles: list) -> None:
        """One forward pass on `ids` with the hooks of `handles` attached; removes them after."""
        try:
            self.model(input_ids=ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()

    def _block_io(self, ids: Tensor, zero: nn.Module | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """(input, output) of block 0 ("") and of each of its modules, on `ids`, with the output of
        `zero` (if any) replaced by zeros."""
        io: dict[str, tuple[Tensor, Tensor]] = {}

        def record(path):
            def hook(mod, args, kwargs, out):
                x, y = _first_tensor(args, kwargs), _first_tensor(out if isinstance(out, tuple) else (out,))
                if x is not None and y is not None:
                    io.setdefault(path, (x.detach().clone(), y.detach().clone()))

            return hook

        handles = [m.register_forward_hook(record(p), with_kwargs=True) for p, m in self._blocks[0].named_modules()]
        if zero is not None:  # registered last: runs after record, so the module's own output is recorded
            handles.append(zero.register_forward_hook(lambda mod, args, out: torch.zeros_like(out)))
        self._forward_with(ids, handles)
        return io

    def _check_mlp_out_feeds_residual(self, ids: Tensor, seen: dict) -> None:
        """Zero block 0's mlp_out and see what changes: the block's output, by exactly the module's
        output (up to a constant factor: granite's residual_multiplier); or the input of the norm
        whose output is the block's (post-LN: BERT, BART); or the output of a norm that reads the
        module's output alone (a norm after the MLP: gemma2). Anything else is not the MLP's share of
        the residual stream (attention's output projection, which the MLP reads, changes it by more)."""
        out = seen["mlp_out.0"].float()
        normal, ablated = self._block_io(ids), self._block_io(ids, zero=self._mlp_outs[0])

        def proportional(delta: Tensor) -> bool:
            if delta.shape != out.shape:
                return False
            scale = float((delta * out).sum() / (out * out).sum().clamp_min(1e-12))
            return scale != 0 and _close(delta, scale * out)

        block_out = normal[""][1]
        block_change = block_out.float() - ablated[""][1].float()
        if proportional(block_change):
            return
        for path, (x, y) in normal.items():
            if not path or path not in ablated:
                continue
            if _close(x.float(), out) and _close(y.float(), block_change):  # a norm after the MLP
                return
            x_ablated = ablated[path][0].float()
            added_to = (
                not proportional(x.float()) and x.shape == x_ablated.shape and proportional(x.float() - x_ablated)
            )
            if added_to and _close(y, block_out):  # the block's last module normalises residual + out (post-LN)
                return
        raise self._fail("mlp.0", "mlp_out", "zeroing the module's output does not change the residual stream by it")

    def _mlp_act_feeds_mlp_out(self, ids: Tensor, seen: dict) -> bool:
        """Whether zeroing block 0's mlp_act output changes what its mlp_out reads: the activation
        sits between the MLP's input projection and its output projection."""
        fed: dict[str, Tensor] = {}
        handles = [
            self._mlp_acts[0].register_forward_hook(lambda mod, args, out: torch.zeros_like(out)),
            self._mlp_outs[0].register_forward_pre_hook(
                lambda mod, args: fed.setdefault("mlp", _first_tensor(args).detach().clone())
            ),
        ]
        self._forward_with(ids, handles)
        return "mlp" in fed and not _close(fed["mlp"], seen["mlp.0"])

    def check_hook(self, name: str) -> tuple[str, int | None]:
        """Parse `name` and check its layer exists in this model; returns (kind, layer)."""
        kind, layer = parse_hook(name)
        if layer is not None and layer >= self.n_layers:
            raise ValueError(
                f"layer {layer} is out of range: this {self.model_type} model has "
                f"{self.n_layers} layers (0-{self.n_layers - 1})"
            )
        if kind in ("mlp", "mlp_pre") and self._mlp_outs is None:
            raise ArchitectureError(
                f"hook {name!r}: this {self.model_type} model is {self.spec.no_neurons}; hooks 'resid.L' and "
                "'embed' still work. If its blocks do hold a dense MLP, set models[].module_paths.mlp_out"
            )
        if kind == "mlp_pre" and self._mlp_acts is None:
            raise ArchitectureError(
                f"hook {name!r}: no activation-function module was found in the MLP of this {self.model_type} "
                "model; set models[].module_paths.mlp_act (its path inside a block)"
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
        block_input: tuple[Tensor, Tensor] | None = None,
        edit: dict[str, Callable[[Tensor], Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Forward pass that returns the requested activations.

        Give exactly one of input_ids [batch, pos] or inputs_embeds [batch, pos, d_model].
        Returns {hook: [batch, pos, dim]} for exactly the requested hooks, plus
        "logits" [batch, pos, vocab] if return_logits. Without logits the pass stops
        right after the deepest requested hook, so later blocks never run.

        With `past_key_values` (a transformers Cache, e.g. DynamicCache), the inputs continue
        the cached prefix: positions, activations and logits are those of the continuation,
        and the cache is extended with it (stopping early leaves the later layers' unextended).

        With `block_input` = (entry [batch], x [batch, pos, d_model]), row r enters block entry[r]
        with x[r] in place of the residual stream: that block "without all preceding layers" when x
        is the embedding (rows may enter at different blocks; a row whose entry is no block runs as
        usual). The blocks before it still run (so masks and positions are the model's own), but
        nothing of theirs reaches it.

        With `edit` = {"mlp.L": f}, the MLP output projection of block L reads f(acts) in place of
        its input acts [batch, pos, d_mlp] (f returns the same shape): e.g. an SAE's reconstruction
        spliced in, or a neuron zeroed. A hook requested at an edited point returns f's output.

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
        edit = edit or {}
        for name in edit:
            if self.check_hook(name)[0] != "mlp":
                raise ValueError(f"edit supports 'mlp.<layer>' hook points only, not {name!r}")
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
            if self._copy_captures:
                tensor = tensor.clone()
            acts[name] = tensor.unflatten(0, (batch, pos)) if tensor.dim() == 2 else tensor
            if name == stop_at:
                raise _StopForward

        handles = []
        try:
            if block_input is not None:
                entry, replacement = block_input
                for block in entry.unique().tolist():
                    if not 0 <= block < self.n_layers:
                        continue
                    enters = (entry == block).to(replacement.device)[:, None, None]

                    def substitute(mod, args, kwargs, enters=enters):
                        hidden = args[0] if args else kwargs["hidden_states"]
                        hidden = torch.where(enters, replacement.to(hidden.dtype), hidden)
                        if args:
                            return (hidden, *args[1:]), kwargs
                        return args, {**kwargs, "hidden_states": hidden}

                    handles.append(self._blocks[block].register_forward_pre_hook(substitute, with_kwargs=True))
            for name, fn in edit.items():

                def replace_input(mod, args, fn=fn):
                    acts = args[0]
                    edited = fn(acts.unflatten(0, (batch, pos)) if acts.dim() == 2 else acts)
                    return (edited.reshape(acts.shape).to(acts.dtype), *args[1:])

                # registered before the capturing hooks, so a capture at this point sees the edit
                handles.append(self._mlp_outs[self.check_hook(name)[1]].register_forward_pre_hook(replace_input))
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

    def embed_onehot(self, onehot: Tensor) -> Tensor:
        """inputs_embeds [batch, pos, d_model] for one-hot (or soft) tokens [batch, pos, vocab]: onehot @ W_E,
        times the scale some embedding modules apply (gemma3), so the forward equals one on the token ids."""
        embeds = onehot @ self.embedding_matrix()
        return embeds if self.embed_scale == 1.0 else embeds * self.embed_scale

    def mlp_out_weight(self, layer: int) -> Tensor:
        """W_out [d_mlp, d_model] of block `layer`: mlp.L @ W_out (+ bias) is the MLP's output (a view)."""
        self.check_hook(f"mlp.{layer}")
        return _weight_in_out(self._mlp_outs[layer])

    def unembedding(self) -> Tensor:
        """W_U [d_model, vocab]: final_norm(resid.last) @ W_U (+ bias) are the logits (a view)."""
        return _weight_in_out(self._unembed)

    def folded_unembedding(self) -> Tensor:
        """W_U with the final norm's elementwise scale folded in, diag(s) @ W_U [d_model, vocab]
        (TransformerLens's fold_ln): how a direction written to the residual stream moves the
        logits, up to the norm's centring and its division by the stream's scale. The scale s is
        measured, not read from a weight, so norms that scale by (1 + w) (gemma) fold correctly:
        at x = (+1, -1, +1, ...), which has mean 0 and rms 1, (norm(x) - norm(-x)) / 2x = s."""
        w_u = self.unembedding()
        if self._final_norm is None:
            return w_u
        x = torch.ones(self.d_model, device=self.device, dtype=self.dtype)
        x[1::2] = -1
        with torch.no_grad():
            scale = (self._final_norm(x[None, None]) - self._final_norm(-x[None, None]))[0, 0] / (2 * x)
        return scale[:, None].to(w_u.dtype) * w_u

    def final_norm(self) -> nn.Module:
        """The norm applied to the last residual stream before unembedding (nn.Identity when there is none)."""
        return self._final_norm if self._final_norm is not None else nn.Identity()

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings [batch, pos, d_model] of input_ids [batch, pos], as the model computes them."""
        return self._embed(input_ids)


def _close(a: Tensor, b: Tensor) -> bool:
    """Same shape and equal up to float rounding (relative to b's size; looser in half precision)."""
    if a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    tol = 1e-4 if a.dtype == torch.float32 and b.dtype == torch.float32 else 2e-2
    return bool((a - b).norm() <= tol * b.norm() + 1e-6)
