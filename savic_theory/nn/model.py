"""ResNet18 for 32×32 images in plain torch, and the flat parameter vector SAVIC acts on.

The network is the CIFAR variant of He et al. (2016): a 3×3 stem convolution with stride 1 and
no max-pool, four stages of two basic blocks with ``w, 2w, 4w, 8w`` channels (``w = 64`` is
the standard ResNet18, 11.2 M parameters for 10 classes), global average pooling and a linear
classifier.

Normalization: **GroupNorm** by default. SAVIC trains ``M`` client models at once through
``torch.func.vmap`` over stacked parameters, and evaluates the averaged model ``x̄``; both need a
model whose whole state is its parameters. BatchNorm's running statistics are buffers updated
in place during the forward pass, which a per-client model under ``vmap`` cannot do; they would
also have to be averaged at synchronisation although they are not parameters of ``f_m``, and
under heterogeneous (Dirichlet) data each client's batch statistics describe a different
distribution, which is known to hurt federated training (Hsieh et al., "The non-IID data
quagmire of decentralized machine learning", ICML 2020). GroupNorm (Wu and He, 2018) normalizes
each sample on its own, so ``f_m`` is a sum over samples, the Hessian-vector products of OASIS
are those of a per-sample loss, and evaluation does not depend on the test batch. The
alternative ``norm="batch"`` is BatchNorm *without* running statistics (batch statistics in
float32, in training and in evaluation), for comparison.

SAVIC's preconditioner is diagonal over all parameters, so the engine works on one flat vector
``x ∈ ℝ^P``; :class:`ParamLayout` maps it to the module's named parameters (views, no copy).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ResNet18", "BatchStatNorm", "ParamLayout", "init_params", "NORMS"]

#: normalization layers, see the module docstring
NORMS = ("group", "batch")


class BatchStatNorm(nn.Module):
    r"""BatchNorm with batch statistics only (no running statistics), computed in float32.

    .. math:: y = \gamma \odot \frac{x - \mathrm{mean}_{N,H,W}(x)}{\sqrt{\mathrm{var}_{N,H,W}(x) + \epsilon}} + \beta

    The same formula is used in training and evaluation, so the module has no buffers and works
    per client under ``torch.func.vmap``.

    Parameters
    ----------
    channels : int
        Number of channels ``C`` of the input ``(N, C, H, W)``.
    eps : float
        ``ε`` added to the variance.

    Example
    -------
    >>> import torch
    >>> y = BatchStatNorm(3)(torch.randn(4, 3, 5, 5)).detach()
    >>> bool(abs(float(y.mean())) < 1e-5)
    True
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(0, 2, 3), keepdim=True, correction=0)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        return (y * self.weight[:, None, None] + self.bias[:, None, None]).to(x.dtype)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, groups), channels)
    return BatchStatNorm(channels)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(norm, c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(norm, c_out, groups)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          _norm(norm, c_out, groups))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    r"""ResNet18 for small images (CIFAR variant): logits of shape ``(N, classes)``.

    Stem ``conv3×3(w) → norm → ReLU``, stages of two basic blocks with ``w, 2w, 4w, 8w``
    channels and strides ``1, 2, 2, 2``, global average pooling, linear layer.

    Parameters
    ----------
    classes : int
        Number of output classes.
    width : int
        ``w``, the channels of the first stage (64 for the standard network; tests use 4).
    in_channels : int
        Input channels (3 for CIFAR-10, 1 for Fashion-MNIST).
    norm : {"group", "batch"}
        GroupNorm, or BatchNorm without running statistics (see the module docstring).
    norm_groups : int
        GroupNorm groups; a layer with ``C`` channels uses ``gcd(C, norm_groups)`` groups.

    Example
    -------
    >>> import torch
    >>> net = ResNet18(classes=10, width=4)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, classes: int = 10, width: int = 64, in_channels: int = 3,
                 norm: str = "group", norm_groups: int = 32):
        super().__init__()
        for name, value in (("classes", classes), ("width", width), ("in_channels", in_channels),
                            ("norm_groups", norm_groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.stem_norm = _norm(norm, width, norm_groups)
        blocks, c_in = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2 ** i
            blocks += [_BasicBlock(c_in, c_out, stride, norm, norm_groups),
                       _BasicBlock(c_out, c_out, 1, norm, norm_groups)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.stem_norm(self.stem(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class ParamLayout:
    """Where each named parameter of a module lives in one flat vector ``x ∈ ℝ^P``.

    Parameters
    ----------
    module : torch.nn.Module
        A module whose whole state is its parameters (no buffers).

    Attributes
    ----------
    names, shapes, sizes : tuples, in ``module.named_parameters()`` order
    size : int
        ``P``, the total number of parameters.

    Example
    -------
    >>> import torch
    >>> layout = ParamLayout(torch.nn.Linear(3, 2))
    >>> layout.size, [tuple(v.shape) for v in layout.unflatten(torch.arange(8.0)).values()]
    (8, [(2, 3), (2,)])
    """

    def __init__(self, module: nn.Module):
        params = dict(module.named_parameters())
        buffers = [n for n, _ in module.named_buffers()]
        if buffers:
            raise ValueError(f"module must keep its whole state in parameters; it has buffers {buffers}")
        if not params:
            raise ValueError("module has no parameters")
        self.names = tuple(params)
        self.shapes = tuple(tuple(p.shape) for p in params.values())
        self.sizes = tuple(int(p.numel()) for p in params.values())
        self.size = int(sum(self.sizes))

    def flatten(self, params: dict) -> torch.Tensor:
        """Concatenate ``{name: tensor}`` into a vector of shape ``(P,)`` (layout order)."""
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict:
        """``{name: view}`` of a vector of shape ``(P,)`` (works per client under ``vmap``)."""
        chunks = torch.split(flat, self.sizes)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}


def init_params(module: nn.Module, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Initial parameters as a flat CPU vector ``(P,)``, the same for the same ``seed`` everywhere.

    Convolutions: Kaiming normal (fan-out, ReLU); normalization: weight 1, bias 0; linear
    layers: uniform in ``±1/√fan_in``. Draws come from a generator seeded with
    ``SeedSequence([seed, 0])``, not from torch's global generator.

    Example
    -------
    >>> net = ResNet18(width=4)
    >>> bool((init_params(net, 0) == init_params(net, 0)).all())
    True
    """
    gen = torch.Generator().manual_seed(_stream_seed(seed, 0))
    out = {}
    for name, p in module.named_parameters():
        t = torch.empty(p.shape, dtype=torch.float64)
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(owner, nn.Conv2d) and leaf == "weight":
            nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=gen)
        elif isinstance(owner, nn.Linear):
            bound = 1.0 / math.sqrt(owner.in_features)
            nn.init.uniform_(t, -bound, bound, generator=gen)
        elif leaf == "weight":
            t.fill_(1.0)
        else:
            t.zero_()
        out[name] = t
    return ParamLayout(module).flatten(out).to(dtype)


def _stream_seed(seed: int, *stream: int) -> int:
    """A 63-bit torch seed for the stream ``(seed, *stream)`` (numpy SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(1, np.uint64)[0] >> 1)
