"""The MNIST notebook's "classifier from scratch": Linear, ReLU and the softmax cross-entropy with their forward
and backward passes written by hand, and SGD's update written by hand; no autograd anywhere. Classifier trains a
network that has a `hand_written_step` with Lightning's manual optimization (model=scratch_mlp optimizer=scratch_sgd)."""

import math
from collections.abc import Sequence

import torch
from torch import nn


class Linear(nn.Module):
    """z = x W^T + b. backward(dz) stores dL/dW = dz^T x and dL/db = sum(dz) as the parameters' .grad and returns
    dL/dx = dz W. Initialized as torch.nn.Linear is: uniform in +-1/sqrt(dim_in)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(dim_in)
        self.W = nn.Parameter(torch.empty(dim_out, dim_in).uniform_(-bound, bound), requires_grad=False)
        self.b = nn.Parameter(torch.empty(dim_out).uniform_(-bound, bound), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.x = x  # what backward needs
        return x @ self.W.T + self.b

    def backward(self, dz: torch.Tensor) -> torch.Tensor:
        self.W.grad, self.b.grad = dz.T @ self.x, dz.sum(0)
        return dz @ self.W


class ReLU(nn.Module):
    """max(0, x); backward passes the gradient where x was positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.positive = x > 0
        return x * self.positive

    def backward(self, dz: torch.Tensor) -> torch.Tensor:
        return dz * self.positive


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax then negative log likelihood, averaged over the batch; and its gradient with respect to the logits,
    (softmax - one_hot(labels)) / batch size. Logits are shifted by their maximum so that exp cannot overflow."""
    rows = torch.arange(len(labels), device=labels.device)
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    loss = -log_probs[rows, labels].mean()
    grad = log_probs.exp()
    grad[rows, labels] -= 1
    return loss, grad / len(labels)


class ScratchMLP(nn.Module):
    """The notebook's Net (784-120-256-10 by default) from the layers above: flatten, Linear and ReLU, Linear."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (120, 256)) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden, num_classes]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [Linear(n_in, n_out), ReLU()]
        self.layers = nn.ModuleList(layers[:-1])  # no ReLU after the last Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1)
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad: torch.Tensor) -> None:
        """From dL/dlogits back through every layer, leaving dL/dparameter in each parameter's .grad."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)

    def hand_written_step(self, images: torch.Tensor, labels: torch.Tensor,
                          optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """The MNIST notebook's loop for one batch of normalized images: forward, the loss and its gradient,
        backward and the optimizer's step. Returns the logits and the loss."""
        optimizer.zero_grad()
        logits = self(images)
        loss, grad = cross_entropy(logits, labels)
        self.backward(grad)  # fills each parameter's .grad
        optimizer.step()
        return logits, loss


class SGD(torch.optim.Optimizer):
    """Plain stochastic gradient descent, written out: parameter <- parameter - lr * gradient (the notebook's
    Optimizer). A torch Optimizer so that Lightning, schedulers and the lr log see it as any other."""

    def __init__(self, params, lr: float = 0.01) -> None:
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    parameter -= group["lr"] * parameter.grad
