"""Muon for convolution filters, SGD for the rest (Keller Jordan's airbench94_muon: 94% on CIFAR-10 in 8 epochs
where SGD needs 10)."""

import math
from collections.abc import Callable, Iterable

import torch


class Muon(torch.optim.Optimizer):
    """SGD with (Nesterov) momentum and weight decay, except for convolution filters (parameters of 4 dimensions),
    which take Muon's step: their momentum (muon_momentum) orthogonalized by a Newton-Schulz iteration, at
    muon_lr / lr times their group's lr (so a schedule moves both), each filter bank's norm held at
    sqrt(out_channels) instead of decayed. One optimizer, so the model's parameter groups and Lightning's single
    optimizer loop stay as they are. muon_lr=None: the filters take the SGD step too, the very steps of
    torch.optim.SGD (a config can then pick Muon or SGD with one value, e.g. by precision)."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.85, nesterov: bool = True,
                 weight_decay: float = 0.0, muon_lr: float | None = 0.24, muon_momentum: float = 0.6,
                 ns_steps: int = 3) -> None:
        ratio = None if muon_lr is None else muon_lr / lr
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      muon_ratio=ratio, muon_momentum=muon_momentum, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                filters = p.ndim == 4 and group["muon_ratio"] is not None
                grad = p.grad if filters or not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                momentum = group["muon_momentum" if filters else "momentum"]
                buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buffer.mul_(momentum).add_(grad)
                update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                if filters:
                    p.mul_(math.sqrt(len(p)) / p.norm())
                    update = orthogonalized(update.reshape(len(p), -1), group["ns_steps"]).view_as(p)
                    p.add_(update, alpha=-group["lr"] * group["muon_ratio"])
                else:
                    p.add_(update, alpha=-group["lr"])
        return loss


def orthogonalized(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz's quintic iteration towards U V^T of g = U S V^T, with the coefficients airbench uses (singular
    values end near, not at, 1: what trains best per step). In float32: bf16 is slower without AMX."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float() / (g.norm() + eps)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)
