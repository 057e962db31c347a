"""Train one model of the embedded family: next-token cross-entropy on random corpus windows.

Every size draws the same windows in the same order (one generator seeded by ``seed``), so sizes
differ only in architecture. On the CPU, a fixed seed gives bitwise-identical weights and losses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmfeatures.lm.tokens import TokenizedSplit


@dataclass
class TrainConfig:
    context_length: int = 128
    batch_size: int = 16
    steps: int = 400
    lr: float = 3e-3
    min_lr_fraction: float = 0.1  # cosine decay ends at lr * this
    warmup_steps: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_tokens: int = 200_000  # held-out tokens scored for the reported loss
    eval_batch_size: int = 32
    log_every: int = 10
    seed: int = 0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_fraction at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def window_starts(stream_len: int, cfg: TrainConfig) -> torch.Tensor:
    """Start offsets of every training window: int64 [steps, batch_size], fixed by cfg.seed alone."""
    n_starts = stream_len - cfg.context_length + 1
    if n_starts <= 0:
        raise ValueError(
            f"the train split has {stream_len} tokens, fewer than one window of "
            f"training.context_length={cfg.context_length}; use a larger corpus or a shorter context"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.randint(0, n_starts, (cfg.steps, cfg.batch_size), generator=gen)


def lm_loss(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over positions 1..n-1 of input_ids [batch, pos]."""
    logits = model(input_ids=input_ids, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


@torch.no_grad()
def heldout_loss(model, heldout: TokenizedSplit, eos_id: int, cfg: TrainConfig) -> dict:
    """Mean next-token loss over consecutive non-overlapping windows of the held-out stream."""
    device = next(model.parameters()).device
    stream = heldout.stream(eos_id)
    if len(stream) < cfg.context_length:
        raise ValueError(f"the held-out split has {len(stream)} tokens, fewer than one window of {cfg.context_length}")
    n_windows = max(1, min(len(stream) // cfg.context_length, cfg.eval_tokens // cfg.context_length))
    windows = stream[: n_windows * cfg.context_length].view(n_windows, cfg.context_length)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, n_windows, cfg.eval_batch_size):
        batch = windows[i : i + cfg.eval_batch_size].to(device)
        n = batch.shape[0] * (batch.shape[1] - 1)
        total += float(lm_loss(model, batch)) * n
        count += n
    model.train(was_training)
    return {"heldout_loss": total / count, "heldout_tokens_scored": count}


def train(model, train_split: TokenizedSplit, eos_id: int, cfg: TrainConfig, desc: str = "train") -> list[dict]:
    """Train `model` in place; returns the loss history (one row per logged step)."""
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    stream = train_split.stream(eos_id)
    starts = window_starts(len(stream), cfg)
    offsets = torch.arange(cfg.context_length)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    model.train()
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=desc, unit="step", mininterval=2.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = stream[starts[step][:, None] + offsets].to(device)  # [batch, context]
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            value = loss.detach().item()
            bar.set_postfix(loss=f"{value:.3f}")
            history.append(
                {
                    "step": step,
                    "tokens": (step + 1) * cfg.batch_size * cfg.context_length,
                    "loss": value,
                    "lr": lr_at(step, cfg),
                    "seconds": time.perf_counter() - t0,
                }
            )
    model.eval()
    return history
