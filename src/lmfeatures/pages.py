"""Static neuron pages in the Neuroscope manner, one HTML file per selected neuron.

Each page: summary statistics, histogram (inline SVG), direct logit effect, the top examples with
every token coloured by activation (colour scale symmetric around 0, scaled to the neuron's max),
shown as a window around the max token with the full text behind a toggle, then the interval
samples and random examples. Pages link to previous / next neuron, to the same index in other
layers, and to the same neuron in the untrained twin (or trained model).
"""

from __future__ import annotations

import html
from pathlib import Path

import torch

from .neurons import Neuron
from .scan import HIST_BINS, Scan

BEFORE, AFTER = 50, 10  # tokens shown around the max token, as Neuroscope

CSS = """
body{font-family:system-ui,sans-serif;max-width:72rem;margin:0 auto;padding:1rem 2rem;line-height:1.45}
nav a{margin-right:1rem} .stats td{padding:.1rem .8rem .1rem 0} h2{margin-top:2rem;border-bottom:1px solid #ddd}
.ex{font-family:ui-monospace,monospace;font-size:.82rem;white-space:pre-wrap;background:#fafafa;
border:1px solid #eee;padding:.4rem;margin:.4rem 0;word-break:break-all}
.ex .m{outline:2px solid #000} .act{color:#555;font-size:.8rem;margin-right:.6rem}
details summary{cursor:pointer;color:#555;font-size:.8rem} table.logit td{padding:0 .6rem;font-family:monospace}
.tok{border-radius:2px}
"""


def _colour(value: float, scale: float) -> str:
    a = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    return f"rgba(255,120,0,{a:.2f})" if a >= 0 else f"rgba(30,110,255,{-a:.2f})"


def _token_text(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id])
    return text.replace("\n", "↵\n").replace("\t", "→   ")


def coloured_tokens(tokens: list[str], acts: list[float], scale: float, mark: int | None = None) -> str:
    spans = []
    for i, (t, a) in enumerate(zip(tokens, acts)):
        cls = "tok m" if i == mark else "tok"
        spans.append(f'<span class="{cls}" style="background:{_colour(a, scale)}" title="{a:.3f}">'
                     f"{html.escape(t)}</span>")  # fmt: skip
    return "".join(spans)


def example_html(tokens: list[str], acts: list[float], scale: float, max_pos: int, value: float, label: str) -> str:
    lo, hi = max(0, max_pos - BEFORE), min(len(tokens), max_pos + AFTER + 1)
    short = coloured_tokens(tokens[lo:hi], acts[lo:hi], scale, max_pos - lo)
    full = coloured_tokens(tokens, acts, scale, max_pos)
    return (f'<div class="ex"><span class="act">{html.escape(label)} act {value:.3f}</span>'
            f"{'…' if lo else ''}{short}{'…' if hi < len(tokens) else ''}"
            f"<details><summary>full window</summary>{full}</details></div>")  # fmt: skip


def histogram_svg(counts: torch.Tensor, width: float, w: int = 520, h: int = 140) -> str:
    """Bars of the non-empty range of a zero-anchored histogram; log-scaled heights."""
    nz = torch.nonzero(counts).flatten()
    if len(nz) == 0:
        return "<p>(no data)</p>"
    a, b = int(nz[0]), int(nz[-1]) + 1
    c = counts[a:b].double()
    heights = (c + 1).log() / (c.max() + 1).log()
    bw = w / len(c)
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{h - 20 - hv * (h - 30):.1f}" width="{max(bw - 1, 1):.1f}" '
        f'height="{hv * (h - 30):.1f}" fill="{"#f80" if (a + i) >= HIST_BINS // 2 else "#38f"}">'
        f"<title>[{(a + i - HIST_BINS // 2) * width:.3f}, {(a + i + 1 - HIST_BINS // 2) * width:.3f}): "
        f"{int(c[i])}</title></rect>"
        for i, hv in enumerate(heights.tolist())
    )
    lo, hi = (a - HIST_BINS // 2) * width, (b - HIST_BINS // 2) * width
    return (f'<svg width="{w}" height="{h}" role="img"><title>activation histogram (log counts)</title>{bars}'
            f'<text x="0" y="{h - 4}" font-size="11">{lo:.3g}</text>'
            f'<text x="{w}" y="{h - 4}" font-size="11" text-anchor="end">{hi:.3g}</text></svg>')  # fmt: skip


def page_name(neuron: Neuron) -> str:
    return f"{neuron.name}.html"


def neuron_page(model_name: str, neuron: Neuron, scan: Scan, tokenizer, token_acts: dict[int, torch.Tensor],
                logit: tuple | None, nav: dict[str, str | None], same_index: list[tuple[int, float, str | None]],
                twin: tuple[str, str] | None) -> str:  # fmt: skip
    """HTML of one neuron page. token_acts maps window id -> [pos] activations of this neuron."""
    h, u = neuron.hook, neuron.index
    scale = float(scan[f"{h}.max"][u])
    ids = scan.windows.ids

    def ex(window: int, label: str) -> str:
        acts = token_acts[window].tolist()
        toks = [_token_text(tokenizer, t) for t in ids[window].tolist()]
        pos = int(torch.tensor(acts).argmax())
        return example_html(toks, acts, scale, pos, acts[pos], label)

    stat_names = ["max", "min", "mean", "var", "skew", "kurtosis", "density", "density_above_threshold"]
    stats = "".join(f"<tr><td>{n}</td><td>{float(scan[f'{h}.{n}'][u]):.4g}</td></tr>" for n in stat_names)
    doc_ids = scan.meta["doc_ids"]
    top = []
    for rank in range(scan[f"{h}.top_window"].shape[0]):
        w = int(scan[f"{h}.top_window"][rank, u])
        if w >= 0:
            top.append(ex(w, f"#{rank + 1} {doc_ids[int(scan.windows.doc[w])]}:{int(scan.windows.start[w])}"))
    intervals = []
    iw, share = scan[f"{h}.interval_window"], scan[f"{h}.interval_share"]
    n_int = iw.shape[0]
    for i in reversed(range(n_int)):
        lo, hi = scale * i / n_int, scale * (i + 1) / n_int
        exs = [ex(int(w), f"interval {i + 1}") for w in iw[i, :, u].tolist() if w >= 0]
        intervals.append(f"<h3>({lo:.3g}, {hi:.3g}]: {100 * float(share[i, u]):.3g}% of tokens</h3>"
                         + ("".join(exs) or "<p>(no window has its max here)</p>"))  # fmt: skip
    randoms = [ex(int(w), "random") for w in scan["random_window"].tolist()]
    if logit:
        up, down = logit
        rows = "".join(
            f"<tr><td>{html.escape(repr(tokenizer.decode([a])))}</td><td>{va:+.3f}</td>"
            f"<td>{html.escape(repr(tokenizer.decode([b]))) if j < len(down) else ''}</td>"
            f"<td>{f'{down[j][1]:+.3f}' if j < len(down) else ''}</td></tr>"
            for j, ((a, va), (b, _)) in enumerate(zip(up, down + [(0, 0.0)] * (len(up) - len(down))))
        )
        logit_html = f'<table class="logit"><tr><th>promotes</th><th></th><th>suppresses</th><th></th></tr>{rows}</table>'
    else:
        logit_html = "<p>This model has no readable unembedding.</p>"

    def link(label: str, target: str | None) -> str:
        return f'<a href="{target}">{label}</a>' if target else f"<span>{label}</span>"

    same = " ".join(
        (f'<a href="{t}">L{layer}</a>' if t else f"L{layer}") + f" ({mx:.2f})" for layer, mx, t in same_index
    )
    twin_html = link(f"same neuron in {twin[0]}", twin[1]) if twin else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{model_name} {neuron.name}</title>
<style>{CSS}</style></head><body>
<nav>{link("← previous", nav.get("prev"))} {link("next →", nav.get("next"))} {link("index", "index.html")}
{twin_html}</nav>
<h1>{html.escape(model_name)} · layer {neuron.layer} · neuron {u}</h1>
<p>Same index in every layer (max activation): {same}</p>
<h2>Summary</h2><table class="stats">{stats}</table>
<p>{scan.meta["n_tokens"]:,} held-out tokens scanned in windows of {scan.meta["scan_config"]["context_length"]}.</p>
{histogram_svg(scan[f"{h}.hist"][u], float(scan[f"{h}.bin_width"][u]))}
<h2>Direct logit effect (W_out · W_U)</h2>{logit_html}
<h2>Top examples (one per window)</h2>{"".join(top)}
<h2>Examples by activation interval</h2>{"".join(intervals)}
<h2>Random windows</h2>{"".join(randoms)}
</body></html>"""


def index_page(model_name: str, rows: list[tuple[Neuron, float, float, str]]) -> str:
    body = "".join(
        f'<tr><td><a href="{page_name(n)}">{n.name}</a></td><td>{mx:.3f}</td><td>{conc:.2f}</td>'
        f"<td>{html.escape(tok)}</td></tr>"
        for n, mx, conc, tok in rows
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{model_name} neurons</title>
<style>{CSS} td{{padding:.1rem .8rem}}</style></head><body><h1>{html.escape(model_name)}: selected neurons</h1>
<table><tr><th>neuron</th><th>max act</th><th>token concentration</th><th>most common max token</th></tr>
{body}</table></body></html>"""


def write_pages(out_dir: Path, pages: dict[str, str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in pages.items():
        (out_dir / name).write_text(text, encoding="utf-8")


def neuron_pages_stage(model_name: str, model_dir: str, scan_dir: str, out_dir: str, selection: dict,
                       partner: dict | None, config: dict, seed: int, device: str) -> None:  # fmt: skip
    """The `neuron_pages` rule. `partner` = {"name", "scan", "role"} of the untrained twin (role
    "twin") or of the trained model (role "trained"); selections are made for both so links resolve."""
    from .io import atomic_path, write_json, write_provenance
    from .hooks import HookedModel
    from .models import load_model, resolve_device
    from .neurons import SelectionConfig, direct_logit_effect, select_neurons, token_activations, token_concentration
    from .scan import load_scan

    cfg = SelectionConfig(**selection, seed=seed)
    scan = load_scan(scan_dir, model_dir=model_dir)
    if partner is None:
        chosen, partner_chosen = select_neurons(scan, cfg), set()
    elif partner["role"] == "twin":  # we are the trained model
        chosen = select_neurons(scan, cfg)
        partner_chosen = set(select_neurons(load_scan(partner["scan"]), cfg, extra=chosen))
    else:  # we are the twin: also page every neuron the trained model pages
        trained = select_neurons(load_scan(partner["scan"]), cfg)
        chosen, partner_chosen = select_neurons(scan, cfg, extra=trained), set(trained)
    model, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(model)
    # every window any page shows, one forward per batch up to the deepest selected layer
    windows: dict[Neuron, list[int]] = {}
    for n in chosen:
        h, u = n.hook, n.index
        ws = scan[f"{h}.top_window"][:, u].tolist() + scan[f"{h}.interval_window"][:, :, u].flatten().tolist()
        windows[n] = sorted({w for w in ws if w >= 0} | set(scan["random_window"].tolist()))
    needed = sorted({w for ws in windows.values() for w in ws})
    row_of = {w: i for i, w in enumerate(needed)}
    acts = token_activations(hooked, scan.windows.ids[needed], list(chosen))
    chosen_set = set(chosen)
    pages, rows = {}, []
    concentration = {h: token_concentration(scan, h) for h in {n.hook for n in chosen}}  # once per layer
    for i, n in enumerate(chosen):
        share, mode = concentration[n.hook]
        same = [(layer, float(scan[f"mlp.{layer}.max"][n.index]) if n.index < scan[f"mlp.{layer}.max"].numel()
                 else float("nan"), page_name(Neuron(layer, n.index)) if Neuron(layer, n.index) in chosen_set else None)
                for layer in range(scan.meta["n_layers"])]  # fmt: skip
        twin = None
        if partner is not None:
            twin = (partner["name"], f"../{partner['name']}/{page_name(n)}" if n in partner_chosen else None)
        nav = {"prev": page_name(chosen[i - 1]) if i > 0 else None,
               "next": page_name(chosen[i + 1]) if i + 1 < len(chosen) else None}  # fmt: skip
        token_acts = {w: acts[n][row_of[w]] for w in windows[n]}
        pages[page_name(n)] = neuron_page(model_name, n, scan, tok, token_acts, direct_logit_effect(hooked, n),
                                          nav, same, twin)  # fmt: skip
        rows.append((n, float(scan[f"{n.hook}.max"][n.index]), float(share[n.index]),
                     tok.decode([int(mode[n.index])])))  # fmt: skip
    pages["index.html"] = index_page(model_name, rows)
    with atomic_path(out_dir, directory=True) as tmp:
        write_pages(tmp, pages)
        write_json(tmp / "selection.json", [
            {"neuron": n.name, "layer": n.layer, "index": n.index, "max": mx, "token_concentration": c,
             "mode_token": t, "page": page_name(n)} for n, mx, c, t in rows])  # fmt: skip
        write_provenance(tmp, config, seed, model=model_name, n_pages=len(rows))
