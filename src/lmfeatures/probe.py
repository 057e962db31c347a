"""Probe a neuron with your own text: per-token activations, or the layer's most active neurons;
with an SAE, the same for its features (the prompt-centric view of seed 004).

python -m lmfeatures probe --model neox-m --layer 1 --neuron 23 "def f(x):"
python -m lmfeatures probe --model neox-m --layer 1 --top 10 "def f(x):"
python -m lmfeatures probe --model neox-s --sae results/sae/neox-s/L0/A --top 10 "import os"
python -m lmfeatures probe --model neox-s --sae results/sae/neox-s/L0/A --neuron 771 "def f(x):"
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from lmfeatures.lm.hooks import HookedModel


@dataclass
class ProbeResult:
    tokens: list[str]
    acts: torch.Tensor  # [pos, d_mlp] activations of the whole layer


def probe(model: HookedModel, tokenizer, layer: int, text: str, sae=None) -> ProbeResult:
    """The layer's neuron activations on the text, or with `sae` (an SAE reading mlp.{layer}) its
    feature activations: [pos, units]."""
    hook = f"mlp.{layer}"
    model.check_hook(hook)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise ValueError("the text is empty after tokenization; give some text to probe")
    with torch.inference_mode():
        acts = model.run([hook], input_ids=ids.to(model.device))[hook][0].float()
        if sae is not None:
            acts = sae.to(acts.device).encode(acts)
    return ProbeResult([tokenizer.decode([t]) for t in ids[0].tolist()], acts.cpu())


def _ansi(value: float, scale: float) -> str:
    a = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    # 256-colour background: oranges for positive, blues for negative, by strength
    shade = int(round(abs(a) * 4))
    code = [231, 223, 216, 209, 202][shade] if a >= 0 else [231, 189, 153, 111, 69][shade]
    return f"\x1b[48;5;{code}m\x1b[38;5;16m"


def format_neuron(
    result: ProbeResult, neuron: int, colour: bool, scale: float | None = None, unit: str = "neuron"
) -> str:
    if not 0 <= neuron < result.acts.shape[1]:
        raise ValueError(f"{unit} {neuron} is out of range (0-{result.acts.shape[1] - 1})")
    acts = result.acts[:, neuron]
    scale = scale or float(acts.abs().max()) or 1.0
    lines = []
    if colour:
        lines.append("".join(f"{_ansi(float(a), scale)}{t}\x1b[0m" for t, a in zip(result.tokens, acts)))
    peak = int(acts.argmax())
    lines.append(f"max {float(acts[peak]):.4f} at position {peak} ({result.tokens[peak]!r})")
    width = max(len(repr(t)) for t in result.tokens)
    for i, (t, a) in enumerate(zip(result.tokens, acts.tolist())):
        bar = "█" * int(round(max(0.0, a) / scale * 20))
        lines.append(f"{i:4d}  {repr(t):<{width}}  {a:9.4f}  {bar}")
    return "\n".join(lines)


def format_top(result: ProbeResult, top: int, unit: str = "neuron") -> str:
    peak_vals, peak_pos = result.acts.max(dim=0)  # [units]
    vals, idx = peak_vals.topk(min(top, peak_vals.numel()))
    lines = [f"{'rank':>4}  {unit:>7}  {'max act':>9}  position  token"]
    for r, (v, n) in enumerate(zip(vals.tolist(), idx.tolist())):
        p = int(peak_pos[n])
        lines.append(f"{r + 1:4d}  {n:7d}  {v:9.4f}  {p:8d}  {result.tokens[p]!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from lmfeatures.config import load_config, model_entry
    from lmfeatures.lm.models import resolve_device
    from lmfeatures.store.models import load_model

    parser = argparse.ArgumentParser(prog="python -m lmfeatures probe", description=__doc__.split("\n")[0])
    parser.add_argument("text", help="text to probe ('-' reads standard input)")
    parser.add_argument("--model", required=True, help="a model name from the config")
    parser.add_argument("--layer", type=int, help="the MLP layer (with --sae: taken from the SAE)")
    parser.add_argument(
        "--sae", help="an SAE folder (SAELens layout, e.g. results/sae/neox-s/L0/A): probe its features"
    )
    parser.add_argument("--neuron", type=int, help="neuron index in the layer's MLP (with --sae: feature index)")
    parser.add_argument(
        "--top", type=int, help="list the layer's N most active neurons (with --sae: features) on the text"
    )
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    args = parser.parse_args(argv)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the probe's output is the activations only
    if args.neuron is None and args.top is None:
        parser.error("give --neuron N, --top N, or both")
    if args.layer is None and args.sae is None:
        parser.error("give --layer L (or --sae DIR, whose hook names the layer)")
    try:
        config = load_config(args.config)
        model_entry(config, args.model)
        model_dir = Path(config["results"]) / "models" / args.model
        model, tokenizer = load_model(model_dir, resolve_device(config["device"]))
        hooked = HookedModel(model)
        sae, layer, unit = None, args.layer, "neuron"
        if args.sae:
            from lmfeatures.store.sae import load_sae

            sae, hook = load_sae(args.sae, hooked)
            layer, unit = hooked.check_hook(hook)[1], "feature"
            if args.layer is not None and args.layer != layer:
                raise ValueError(f"--layer {args.layer}, but the SAE at {args.sae} reads {hook}")
        text = sys.stdin.read() if args.text == "-" else args.text
        result = probe(hooked, tokenizer, layer, text, sae)
        colour = args.color == "always" or (
            args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        )
        what = f"SAE {args.sae} on mlp.{layer}" if sae is not None else f"layer {layer}"
        out = [f"{args.model} {what}: {len(result.tokens)} tokens"]
        if args.neuron is not None:
            out.append(format_neuron(result, args.neuron, colour, unit=unit))
        if args.top is not None:
            out.append(format_top(result, args.top, unit=unit))
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(out))
    return 0
