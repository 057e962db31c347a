"""One SAE training step against the bare matrix multiplies of a step.

No arguments; under two minutes on 2 cores. At the default config's SAE shape (d_in = d_mlp of
`sae.model`, d_sae = expansion x d_in, k, batch_size) on planted sparse activations (so features
stay alive as on real data), it reports training tokens per second of `lmfeatures.sae.sae.train_sae`
(the whole loop: batch gather, encode, TopK, decode, AuxK, backward, Adam, decoder renorm) and its
time per step, measured as the difference between two run lengths so that set-up is excluded.

The reference is the five dense products one step of a dense implementation multiplies:
x @ W_enc, z @ W_dec (forward), z^T @ E, E @ W_dec^T, x^T @ G (backward). Our step computes only
the first densely (every feature's pre-activation is needed to pick the top k) and the others on
k rows per token. Prints `sae-step/matmul time ratio: X` last (goal: X <= 1.5).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lmfeatures.config import load_config, model_entry
from lmfeatures.sae.sae import SAEConfig, train_sae

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def planted_activations(n: int, d: int, active: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(4 * d, d, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    which = torch.randint(0, 4 * d, (n, active), generator=g)
    return torch.einsum("na,nad->nd", torch.rand(n, active, generator=g) + 0.5, directions[which]).half()


def main() -> None:
    torch.set_num_threads(2)
    config = load_config(REPO / "config" / "config.yaml")
    params = config["sae"]
    d_in = model_entry(config, params["model"])["d_mlp"]
    d_sae, batch = params["expansion"] * d_in, params["batch_size"]
    acts = planted_activations(200_000, d_in)
    steps = 60

    def run(n_steps: int) -> None:
        cfg = SAEConfig(
            expansion=params["expansion"], k=params["k"], batch_size=batch, tokens=n_steps * batch, max_dead_share=1.0
        )
        train_sae(acts, cfg)

    run(5)  # warm-up
    short, long = best_of(lambda: run(steps)), best_of(lambda: run(2 * steps))
    step = (long - short) / steps
    print(f"SAE {d_in} -> {d_sae}, k {params['k']}, batch {batch} tokens, 2 threads")
    print(f"train_sae: {2 * steps * batch / long:,.0f} training tokens/s ({1000 * step:.2f} ms per step)")

    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, d_in, generator=g)
    w_enc, w_dec = torch.randn(d_in, d_sae, generator=g), torch.randn(d_sae, d_in, generator=g)
    z, grad_pre, grad_out = (
        torch.randn(batch, d_sae, generator=g),
        torch.randn(batch, d_sae, generator=g),
        torch.randn(batch, d_in, generator=g),
    )

    def dense_products() -> None:
        for _ in range(10):
            x @ w_enc
            z @ w_dec
            z.T @ grad_out
            grad_out @ w_dec.T
            x.T @ grad_pre

    encoder = best_of(lambda: [x @ w_enc for _ in range(10)]) / 10
    matmuls = best_of(dense_products) / 10
    print(f"encoder product x @ W_enc alone: {1000 * encoder:.2f} ms (step / encoder: {step / encoder:.2f})")
    print(f"five dense products of a step: {1000 * matmuls:.2f} ms")
    print(f"sae-step/matmul time ratio: {step / matmuls:.2f}")


if __name__ == "__main__":
    main()
