"""Sparse autoencoders on MLP activations, trained in plain PyTorch: TopK (default) and ReLU + L1.

    x [tokens, d_in]                    the activations (an `mlp.L` hook point)
    pre = (x - b_dec) @ W_enc + b_enc   [tokens, d_sae]   (pre-encoder bias: b_dec is subtracted first)
    z   = ReLU(TopK_k(pre))             "topk": the k largest pre-activations kept, the rest 0
        = ReLU(pre)                     "relu": sparsity from the L1 penalty l1 · Σ_f z_f
    x̂  = z @ W_dec + b_dec             W_dec [d_sae, d_in] with unit-norm rows

Training (Towards Monosemanticity; Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
inputs are scaled by one constant so that E‖x‖² = d_in (so one learning rate fits every model), the
encoder starts as the decoder's transpose and b_dec at the data mean, decoder rows are renormalised
after every step with the gradient component along each row removed first. Features that have not
fired for `dead_tokens` tokens are dead: an auxiliary TopK over the dead features reconstructs the
residual error (Gao et al.'s AuxK, coefficient 1/32), which pulls them back to where the error is.
The ReLU SAE's L1 coefficient is tuned to a target L0 while it trains (a fixed one is fragile:
ANCHORS §7 measured L0 203 at 0.1 and all features dead at 3 on one synthetic set).

The input scale is folded into the saved weights at the end (b_enc and b_dec divided by it, W_dec
unchanged), which is exact because TopK and ReLU commute with a positive scale: the returned SAE
reads raw activations and its feature activations are in the activations' own units.

A random baseline ("Sanity checks for sparse autoencoders", 2026): `frozen_decoder` keeps W_dec at
its random unit directions and trains only the encoder and biases.

`sae_lens_files` / `from_sae_lens_files` give SAELens's layout (cfg.json + sae_weights.safetensors)
as a dict and tensors; writing them is the caller's. No file I/O here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

ARCHITECTURES = ("topk", "relu")
SAE_LENS_ARCHITECTURE = {"topk": "topk", "relu": "standard"}  # our name -> SAELens's
SAE_LENS_VERSION = "6.54.12"  # the version whose loader the round-trip test checks


class SAEError(ValueError):
    """Bad SAE settings or input, or a training run that failed its own checks."""


@dataclass
class SAEConfig:
    architecture: str = "topk"  # topk | relu
    expansion: int = 8  # d_sae = expansion · d_in; 8-16x in the small-SAE references (ANCHORS §5)
    k: int = 16  # TopK: active features per token; ReLU: the L0 its L1 coefficient is tuned to
    l1_coefficient: float = 1.0  # ReLU: the start value (ANCHORS §7: 1 was good where 0.1 and 3 failed)
    l1_adapt: float = 0.01  # ReLU: log-step of the coefficient per step per unit of relative L0 error
    lr: float = 3e-3
    batch_size: int = 1024  # tokens per step
    tokens: int = 1_000_000  # training tokens (steps = tokens // batch_size)
    dead_tokens: int = 200_000  # a feature that has not fired for this many tokens is dead
    aux_k: int | None = None  # AuxK: dead features used to reconstruct the error; None = d_in // 2 (Gao et al.)
    aux_coefficient: float = 1 / 32  # Gao et al.'s value
    max_dead_share: float = 0.5  # stop with an error if more than this share is dead at the end
    frozen_decoder: bool = False  # random baseline: W_dec stays at random unit directions
    seed: int = 0

    def check(self, d_in: int) -> None:
        """Raise SAEError naming the setting that does not fit an input of width d_in."""
        if self.architecture not in ARCHITECTURES:
            raise SAEError(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")
        if self.expansion < 1:
            raise SAEError(f"expansion {self.expansion} must be at least 1")
        if not 1 <= self.k < self.expansion * d_in:
            raise SAEError(f"k {self.k} must be between 1 and d_sae - 1 = {self.expansion * d_in - 1}")
        if self.tokens < self.batch_size:
            raise SAEError(f"tokens {self.tokens} is fewer than one batch ({self.batch_size})")


class SparseAutoencoder(nn.Module):
    """W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in] (SAELens's names and shapes)."""

    def __init__(self, d_in: int, d_sae: int, architecture: str = "topk", k: int = 16):
        super().__init__()
        self.architecture, self.k = architecture, k
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def pre_activations(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> [..., d_sae]."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: Tensor) -> Tensor:
        """Feature activations from pre-activations [..., d_sae] (dense, mostly zero)."""
        if self.architecture == "relu":
            return torch.relu(pre)
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))

    def encode(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> feature activations z [..., d_sae]."""
        return self.activate(self.pre_activations(x))

    def decode(self, z: Tensor) -> Tensor:
        """z [..., d_sae] -> reconstruction [..., d_in]."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction x̂ of x [..., d_in]: what is spliced into the model in place of x."""
        return self.decode(self.encode(x))


def _scatter_rows(rows: Tensor, weights: Tensor, vectors: Tensor, n_rows: int) -> Tensor:
    """out [n_rows, d] with out[f] = Σ_(b,j): rows[b,j]=f  weights[b,j] · vectors[b]: rows, weights
    [batch, k], vectors [batch, d]. A sparse [n_rows, batch] @ [batch, d] product, which on 2 CPU
    cores is several times faster than autograd's index_put for the same sum."""
    batch, k = rows.shape
    cols = torch.arange(batch, device=rows.device).repeat_interleave(k)
    matrix = torch.sparse_coo_tensor(
        torch.stack([rows.flatten(), cols]), weights.flatten(), (n_rows, batch), check_invariants=False
    )
    return torch.sparse.mm(matrix, vectors)


class _SelectedPre(torch.autograd.Function):
    """The entries pre[b, indices[b, j]] of pre = (x - b_dec) @ W_enc + b_enc (already computed
    without gradients; x [batch, d_in] needs none), with gradients only through the selected
    entries: W_enc gets k columns' worth per token instead of a dense [d_in, batch] @ [batch, d_sae]
    product, and b_dec's gradient is -W_enc @ (b_enc's gradient)."""

    @staticmethod
    def forward(ctx, x, b_dec, w_enc, b_enc, indices, pre):
        ctx.save_for_backward(x, b_dec, w_enc, indices)
        return pre.gather(1, indices)

    @staticmethod
    def backward(ctx, grad):
        x, b_dec, w_enc, indices = ctx.saved_tensors
        d_sae = w_enc.shape[1]
        grad_w = _scatter_rows(indices, grad, x - b_dec, d_sae).T
        grad_b = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(
            0, indices.flatten(), grad.flatten()
        )
        return None, -(w_enc @ grad_b), grad_w, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """Σ_j values[b, j] · W_dec[indices[b, j]] for values, indices [batch, k] -> [batch, d_in]:
    k decoder rows per token instead of a dense [batch, d_sae] @ [d_sae, d_in] product."""

    @staticmethod
    def forward(ctx, values, indices, w_dec):
        rows = w_dec[indices]  # [batch, k, d_in]
        ctx.save_for_backward(values, indices, rows)
        ctx.d_sae = w_dec.shape[0]
        return torch.einsum("bk,bkd->bd", values, rows)

    @staticmethod
    def backward(ctx, grad):
        values, indices, rows = ctx.saved_tensors
        grad_values = torch.einsum("bkd,bd->bk", rows, grad)
        grad_w = _scatter_rows(indices, values, grad, ctx.d_sae) if ctx.needs_input_grad[2] else None
        return grad_values, None, grad_w


def init_sae(d_in: int, cfg: SAEConfig, data_mean: Tensor, generator: torch.Generator) -> SparseAutoencoder:
    """Random unit decoder rows, W_enc = W_dec^T, b_enc = 0, b_dec = the data mean."""
    sae = SparseAutoencoder(d_in, cfg.expansion * d_in, cfg.architecture, cfg.k)
    w = torch.randn(sae.d_sae, d_in, generator=generator)
    with torch.no_grad():
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_(data_mean)
    return sae


def _check_finite(x: Tensor, where: str) -> None:
    if not torch.isfinite(x).all():
        row = int((~torch.isfinite(x)).any(-1).nonzero()[0])
        raise SAEError(f"{where}: activation row {row} has NaN or Inf; check the model's weights and dtype")


def input_scale(acts: Tensor, chunk: int = 65536) -> float:
    """c with E‖c·x‖² = d_in over acts [n, d_in] (any dtype; read in chunks)."""
    total = 0.0
    for i in range(0, len(acts), chunk):
        x = acts[i : i + chunk].float()
        _check_finite(x, f"training activations from row {i}")
        total += float(x.pow(2).sum())
    return math.sqrt(acts.shape[1] * len(acts) / max(total, 1e-30))


def _remove_parallel_gradient(w_dec: nn.Parameter) -> None:
    """Drop each decoder row's gradient component along the row, so renormalising undoes no learning."""
    if w_dec.grad is not None:
        w_dec.grad -= (w_dec.grad * w_dec.data).sum(1, keepdim=True) * w_dec.data


def train_sae(
    acts: Tensor, cfg: SAEConfig, device: torch.device | str = "cpu", desc: str = "sae"
) -> tuple[SparseAutoencoder, list[dict]]:
    """Train an SAE on acts [n, d_in] (kept where they are, any float dtype; batches are moved to
    `device`). Returns (the SAE in raw units, on `device`; a log: one dict per logged step with
    step, tokens, mse, fvu, l0, dead_share, and l1_coefficient for ReLU).
    Batches are drawn without replacement, reshuffled each epoch. Raises SAEError on bad settings,
    non-finite activations, or more than cfg.max_dead_share dead features at the end."""
    n, d_in = acts.shape
    cfg.check(d_in)
    scale = input_scale(acts)
    gen = torch.Generator().manual_seed(cfg.seed)
    mean = acts[torch.randperm(n, generator=gen)[: min(n, 65536)]].float().mean(0) * scale
    sae = init_sae(d_in, cfg, mean, gen).to(device)
    sae.W_dec.requires_grad_(not cfg.frozen_decoder)
    params = [p for p in sae.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, foreach=True)
    steps = cfg.tokens // cfg.batch_size
    since_fired = torch.zeros(sae.d_sae, dtype=torch.int64, device=device)
    l1 = cfg.l1_coefficient
    order = torch.randperm(n, generator=gen)
    cursor, log = 0, []
    log_every = max(1, steps // 50)
    bar = tqdm(range(steps), desc=desc, unit="step", mininterval=2.0)
    for step in bar:
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        rows = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        x = acts[rows].to(device, torch.float32) * scale  # input_scale has checked every row is finite
        dead = since_fired >= cfg.dead_tokens
        if cfg.architecture == "topk":
            with torch.no_grad():
                pre = sae.pre_activations(x)
            indices = pre.topk(cfg.k, dim=-1).indices
            values = torch.relu(_SelectedPre.apply(x, sae.b_dec, sae.W_enc, sae.b_enc, indices, pre))
            x_hat = _SparseDecode.apply(values, indices, sae.W_dec) + sae.b_dec
            fired = torch.zeros_like(since_fired, dtype=torch.bool)
            fired[indices[values > 0]] = True
            l0 = float((values > 0).sum()) / len(x)
            sparsity = torch.zeros((), device=device)
        else:
            pre = sae.pre_activations(x)
            z = torch.relu(pre)
            x_hat = z @ sae.W_dec + sae.b_dec
            active = z > 0
            fired = active.any(0)
            l0 = float(active.sum()) / len(x)
            sparsity = l1 * z.sum(-1).mean()  # decoder rows have unit norm, so Σ z_f ‖W_dec[f]‖ = Σ z_f
        error = x - x_hat
        mse = error.pow(2).sum(-1).mean()
        aux = torch.zeros((), device=device)
        n_dead = int(dead.sum())
        if n_dead:
            # AuxK: the dead features' top pre-activations reconstruct the live SAE's error
            aux_indices = pre.detach().masked_fill(~dead, -math.inf).topk(min(cfg.aux_k or d_in // 2, n_dead)).indices
            aux_values = _SelectedPre.apply(x, sae.b_dec, sae.W_enc, sae.b_enc, aux_indices, pre.detach())
            aux_hat = _SparseDecode.apply(torch.relu(aux_values), aux_indices, sae.W_dec)
            residual = error.detach()
            aux = cfg.aux_coefficient * (residual - aux_hat).pow(2).sum(-1).mean() / residual.pow(2).sum(-1).mean()
        loss = mse + sparsity + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not cfg.frozen_decoder:
            _remove_parallel_gradient(sae.W_dec)
        opt.step()
        with torch.no_grad():
            if not cfg.frozen_decoder:
                sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        since_fired += len(x)
        since_fired[fired] = 0
        if cfg.architecture == "relu":  # move the L1 coefficient toward the target L0, in log space
            l1 *= math.exp(cfg.l1_adapt * max(-1.0, min(1.0, (l0 - cfg.k) / cfg.k)))
        if step % log_every == 0 or step == steps - 1:
            variance = (x - x.mean(0)).pow(2).sum(-1).mean()
            entry = {
                "step": step,
                "tokens": (step + 1) * cfg.batch_size,
                "mse": float(mse.detach()) / scale**2,
                "fvu": float(mse.detach() / variance),
                "l0": l0,
                "dead_share": float((since_fired >= cfg.dead_tokens).float().mean()),
            }
            if cfg.architecture == "relu":
                entry["l1_coefficient"] = l1
            log.append(entry)
            bar.set_postfix(fvu=f"{entry['fvu']:.3f}", l0=f"{l0:.1f}", dead=f"{entry['dead_share']:.2f}")
    bar.close()
    dead_share = float((since_fired >= min(cfg.dead_tokens, steps * cfg.batch_size)).float().mean())
    if dead_share > cfg.max_dead_share:
        raise SAEError(
            f"{desc}: {dead_share:.0%} of the features were dead at the end of training (max_dead_share "
            f"{cfg.max_dead_share}); lower the lr, train on more tokens, or lower the expansion"
        )
    with torch.no_grad():  # fold the input scale into the biases (see module docstring)
        sae.b_enc /= scale
        sae.b_dec /= scale
    sae.requires_grad_(False)
    return sae, log


@dataclass
class ReconstructionStats:
    """Streaming evaluation of an SAE on activations: `update` per batch, `result` at the end."""

    d_in: int
    d_sae: int
    dense_density: float = 0.1  # a feature firing on more than this share of tokens is dense (SAELens)

    def __post_init__(self):
        f64 = torch.float64
        self.n = 0
        self.sum_x = torch.zeros(self.d_in, dtype=f64)
        self.sum_x2 = torch.zeros((), dtype=f64)
        self.sum_err2 = torch.zeros((), dtype=f64)
        self.sum_l0 = torch.zeros((), dtype=f64)
        self.fires = torch.zeros(self.d_sae, dtype=f64)

    def update(self, x: Tensor, x_hat: Tensor, z: Tensor) -> None:
        """x, x_hat [tokens, d_in], z [tokens, d_sae]."""
        x, x_hat, active = x.double().cpu(), x_hat.double().cpu(), (z > 0).cpu()
        self.n += len(x)
        self.sum_x += x.sum(0)
        self.sum_x2 += x.pow(2).sum()
        self.sum_err2 += (x - x_hat).pow(2).sum()
        self.sum_l0 += active.sum()
        self.fires += active.sum(0)

    def result(self) -> dict:
        """l0, explained_variance (1 - Σ‖x - x̂‖² / Σ‖x - mean‖²), mse (per element), dead_share
        (never fired), dense_share, and each feature's density [d_sae] under "density"."""
        total_var = self.sum_x2 - self.sum_x.pow(2).sum() / self.n
        density = self.fires / self.n
        return {
            "tokens": self.n,
            "l0": float(self.sum_l0 / self.n),
            "explained_variance": float(1 - self.sum_err2 / total_var),
            "mse": float(self.sum_err2 / (self.n * self.d_in)),
            "dead_share": float((density == 0).double().mean()),
            "dense_share": float((density > self.dense_density).double().mean()),
            "density": density.float(),
        }


def loss_recovered(clean: float, spliced: float, zero_ablated: float) -> float:
    """Share of the loss gap between zero-ablating the activations and the clean model that the
    reconstruction closes: (L_zero - L_spliced) / (L_zero - L_clean); 1 = as good as clean."""
    return (zero_ablated - spliced) / (zero_ablated - clean)


def sae_lens_files(sae: SparseAutoencoder, hook_name: str, extra: dict | None = None) -> tuple[dict, dict]:
    """(cfg.json contents, sae_weights.safetensors tensors) in SAELens's layout (ANCHORS §7):
    its loader `SAE.load_from_disk(dir)` reads them. `extra` goes into cfg["metadata"]."""
    cfg = {
        "architecture": SAE_LENS_ARCHITECTURE[sae.architecture],
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": str(sae.W_enc.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAE_LENS_VERSION, "hook_name": hook_name, **(extra or {})},
    }
    if sae.architecture == "topk":
        cfg["k"] = sae.k
    tensors = {name: p.detach().cpu().contiguous() for name, p in sae.named_parameters()}
    return cfg, tensors


def from_sae_lens_files(cfg: dict, tensors: dict[str, Tensor]) -> SparseAutoencoder:
    """The inverse of sae_lens_files; raises SAEError for a layout it does not read."""
    ours = {v: k for k, v in SAE_LENS_ARCHITECTURE.items()}
    if cfg.get("architecture") not in ours:
        raise SAEError(f"SAE architecture {cfg.get('architecture')!r} is not one of {sorted(ours)}")
    missing = {"W_enc", "W_dec", "b_enc", "b_dec"} - set(tensors)
    if missing:
        raise SAEError(f"SAE weights lack {sorted(missing)}")
    d_in, d_sae = tensors["W_enc"].shape
    if (cfg.get("d_in"), cfg.get("d_sae")) != (d_in, d_sae):
        raise SAEError(f"cfg.json says d_in {cfg.get('d_in')}, d_sae {cfg.get('d_sae')}; W_enc is {d_in} x {d_sae}")
    sae = SparseAutoencoder(d_in, d_sae, ours[cfg["architecture"]], int(cfg.get("k") or 0))
    sae.load_state_dict({k: tensors[k].float() for k in ("W_enc", "W_dec", "b_enc", "b_dec")})
    return sae.requires_grad_(False)
