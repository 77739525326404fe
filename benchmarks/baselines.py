"""What people run today, written the way published code writes it, for side-by-side timing.

Every baseline runs SAVIC with global Adam-like scaling (``v_k = β v_{k−1} + (1−β) s_k``,
``D̂ = max(e, √(v_k/(1−β^k)))``, ``s`` the clients' mean of ``g ⊙ g`` at the sync step) on a
diagonal quadratic ``f_m(x) = ½ xᵀ diag(a_m) x − b_mᵀ x``, every run after the other and every
client after the other, and records six of the simulator's seven history quantities (all but
``dist_sq_D``) at the same steps, ``G`` as the simulator takes it (the root of the largest entry of
the clients' mean of ``g ⊙ g``). With
noise-free gradients each one computes the simulator's numbers (checked by the suite), so the
timings compare the same work.

* :func:`numpy_loop` — a Python loop over runs, steps and clients, one NumPy vector per client
  (how Local SGD experiment code is usually written); ``hoist=True`` is the same loop tuned by
  hand: ``γ/D̂`` formed once per sync and each client updated in place.
* :func:`torch_loop` — one ``torch.optim.Optimizer`` per client and periodic averaging of the
  parameters, as federated-learning frameworks run local optimisers; ``autograd=True`` gets
  gradients from ``loss.backward()``, ``autograd=False`` writes ``a ⊙ x − b`` into ``.grad``.
* :func:`torch_adam_loop` — stock ``torch.optim.Adam(betas=(0, β))`` per client (no momentum;
  its second moment is updated every local step, which is SAVIC's *local* scaling work). It is
  another algorithm: it adds ``eps`` where SAVIC clips, updates its moment before the step and
  has no initial statistic, so its iterates differ (by a few percent, more in the final
  distance) and are not checked; only its time per step is comparable.
"""
from __future__ import annotations

import numpy as np

__all__ = ["numpy_loop", "torch_loop", "torch_adam_loop"]


def _record_numpy(xs, D, G, x_star, a_mean, b_mean, f_star):
    M = len(xs)
    xbar = sum(xs) / M
    diff = xbar - x_star
    cons = sum(float(np.dot(x - xbar, x - xbar)) for x in xs) / M
    f = 0.5 * float(np.dot(a_mean * xbar, xbar)) - float(np.dot(b_mean, xbar))
    return [float(np.dot(diff, diff)), f - f_star, cons, float(D.min()), float(D.max()), G]


def numpy_loop(A, b, x0, gamma, beta, e, steps, H, noise=0.0, runs=1, seed=0, record_every=None,
               dtype=np.float64, hoist=False):
    """Per-run, per-client NumPy loop; returns ``(x (runs, M, d), history (runs, n_records, 6))``.

    Parameters
    ----------
    A, b : arrays (M, d)
        Diagonals and linear terms of the clients' quadratics.
    x0 : array (d,)
    gamma, beta, e : float
    steps, H : int
        Local steps ``T`` and the sync period.
    noise : float
        ``σ² = E‖ξ‖²`` of additive Gaussian noise (drawn per client, per step).
    runs : int
        Independent runs, one after the other (noise from ``default_rng([seed, run])``).
    record_every : int, optional
        Record every this many steps (default ``H``).
    dtype : numpy float type
        Precision of the client vectors (noise is drawn in float64 and rounded).
    hoist : bool
        Form ``γ/D̂`` once per sync and update each client in place (``x -= step * g``)
        instead of ``x = x − γ g / D̂`` at every step: the same iterates up to rounding.

    Example
    -------
    >>> import numpy as np
    >>> x, hist = numpy_loop(np.ones((2, 3)), np.ones((2, 3)), np.zeros(3), 0.1, 0.9, 1e-2, 4, 2)
    >>> x.shape, hist.shape
    ((1, 2, 3), (1, 3, 6))
    """
    A, b = np.asarray(A, dtype=dtype), np.asarray(b, dtype=dtype)
    gamma, beta, e = dtype(gamma), dtype(beta), dtype(e)
    M, d = A.shape
    record_every = record_every or H
    x_star = b.sum(axis=0) / A.sum(axis=0)
    a_mean, b_mean = A.mean(axis=0), b.mean(axis=0)
    f_star = 0.5 * float(np.dot(a_mean * x_star, x_star)) - float(np.dot(b_mean, x_star))
    sigma = np.sqrt(noise / d)
    out, hist = [], []
    for r in range(runs):
        rng = np.random.default_rng([seed, r])
        xs = [np.array(x0, dtype=dtype) for _ in range(M)]
        grads = []
        for m in range(M):
            g = A[m] * xs[m] - b[m]
            if noise:
                g = g + (sigma * rng.standard_normal(d)).astype(dtype, copy=False)
            grads.append(g)
        s = sum(g * g for g in grads) / M
        G = float(np.sqrt(np.max(s)))  # the largest entry of the statistic D̂ is built from
        v, c = (1 - beta) * s, 1 - beta
        D = np.maximum(e, np.sqrt(v / c))
        step = gamma / D if hoist else None
        rows = [_record_numpy(xs, D, G, x_star, a_mean, b_mean, f_star)]
        for t in range(1, steps + 1):
            for m in range(M):
                g = A[m] * xs[m] - b[m]
                if noise:
                    g = g + (sigma * rng.standard_normal(d)).astype(dtype, copy=False)
                if hoist:
                    xs[m] -= step * g
                else:
                    xs[m] = xs[m] - gamma * g / D
                grads[m] = g
            if t % H == 0:
                xbar = sum(xs) / M
                xs = [xbar.copy() for _ in range(M)]
                sq = [g * g for g in grads]
                s = sum(sq) / M
                G = max(G, float(np.sqrt(np.max(s))))
                v, c = beta * v + (1 - beta) * s, beta * c + (1 - beta)
                D = np.maximum(e, np.sqrt(v / c))
                step = gamma / D if hoist else None
            if t % record_every == 0 or t == steps:
                rows.append(_record_numpy(xs, D, G, x_star, a_mean, b_mean, f_star))
        out.append(np.stack(xs))
        hist.append(rows)
    return np.stack(out), np.array(hist)


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is the [nn] extra
        raise RuntimeError("the PyTorch baselines need torch: pip install 'savic-theory[nn]'") from exc
    return torch


def _scaled_sgd_class():
    torch = _torch()

    class ScaledSGD(torch.optim.Optimizer):
        """``x ← x − γ g / D̂`` with ``D̂`` in the optimiser state (set by the server at syncs)."""

        def __init__(self, params, lr):
            super().__init__(params, dict(lr=lr))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.addcdiv_(p.grad, self.state[p]["D"], value=-group["lr"])

    return ScaledSGD


def torch_loop(A, b, x0, gamma, beta, e, steps, H, noise=0.0, runs=1, seed=0, record_every=None,
               autograd=True):
    """One optimiser per client, periodic averaging; returns ``(x, history)`` like :func:`numpy_loop`.

    Example
    -------
    >>> import numpy as np
    >>> x, hist = torch_loop(np.ones((2, 3)), np.ones((2, 3)), np.zeros(3), 0.1, 0.9, 1e-2, 4, 2)
    >>> x.shape
    (1, 2, 3)
    """
    torch = _torch()
    ScaledSGD = _scaled_sgd_class()
    A_t = torch.as_tensor(np.asarray(A, dtype=np.float64))
    b_t = torch.as_tensor(np.asarray(b, dtype=np.float64))
    M, d = A_t.shape
    record_every = record_every or H
    x_star = b_t.sum(0) / A_t.sum(0)
    a_mean, b_mean = A_t.mean(0), b_t.mean(0)
    f_star = float(0.5 * (a_mean * x_star * x_star).sum() - (b_mean * x_star).sum())
    sigma = float(np.sqrt(noise / d))

    def record(params, D, G):
        with torch.no_grad():
            X = torch.stack([p.detach() for p in params])
            xbar = X.mean(0)
            diff = xbar - x_star
            cons = float(((X - xbar) ** 2).sum(1).mean())
            f = float(0.5 * (a_mean * xbar * xbar).sum() - (b_mean * xbar).sum())
            return [float(diff @ diff), f - f_star, cons, float(D.min()), float(D.max()), G]

    out, hist = [], []
    for r in range(runs):
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + r)
        params = [torch.nn.Parameter(torch.as_tensor(np.array(x0, dtype=np.float64))) for _ in range(M)]
        opts = [ScaledSGD([p], lr=gamma) for p in params]

        def compute_grads():
            for m, (p, opt) in enumerate(zip(params, opts)):
                if autograd:
                    if p.grad is not None:
                        opt.zero_grad(set_to_none=False)
                    loss = 0.5 * (A_t[m] * p * p).sum() - (b_t[m] * p).sum()
                    loss.backward()
                else:
                    with torch.no_grad():
                        p.grad = A_t[m] * p - b_t[m]
                if noise:
                    p.grad.add_(torch.randn(d, generator=gen, dtype=torch.float64), alpha=sigma)

        compute_grads()
        with torch.no_grad():
            sq = torch.stack([p.grad * p.grad for p in params])
            s = sq.mean(0)
            G = float(s.max().sqrt())  # the largest entry of the statistic D̂ is built from
            v, c = (1 - beta) * s, 1 - beta
            D = torch.clamp(torch.sqrt(v / c), min=e)
        for opt, p in zip(opts, params):
            opt.state[p]["D"] = D
        rows = [record(params, D, G)]
        for t in range(1, steps + 1):
            compute_grads()
            for opt in opts:
                opt.step()
            if t % H == 0:
                with torch.no_grad():
                    xbar = torch.stack([p for p in params]).mean(0)
                    for p in params:
                        p.copy_(xbar)
                    sq = torch.stack([p.grad * p.grad for p in params])
                    s = sq.mean(0)
                    G = max(G, float(s.max().sqrt()))
                    v, c = beta * v + (1 - beta) * s, beta * c + (1 - beta)
                    D = torch.clamp(torch.sqrt(v / c), min=e)
                for opt, p in zip(opts, params):
                    opt.state[p]["D"] = D
            if t % record_every == 0 or t == steps:
                rows.append(record(params, D, G))
        out.append(torch.stack([p.detach() for p in params]).numpy())
        hist.append(rows)
    return np.stack(out), np.array(hist)


def torch_adam_loop(A, b, x0, gamma, beta, e, steps, H, noise=0.0, runs=1, seed=0):
    """Stock ``torch.optim.Adam(betas=(0, β), eps=e)`` per client with autograd and averaging.

    Returns the final iterates ``(runs, M, d)``.
    """
    torch = _torch()
    A_t = torch.as_tensor(np.asarray(A, dtype=np.float64))
    b_t = torch.as_tensor(np.asarray(b, dtype=np.float64))
    M, d = A_t.shape
    sigma = float(np.sqrt(noise / d))
    out = []
    for r in range(runs):
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + r)
        params = [torch.nn.Parameter(torch.as_tensor(np.array(x0, dtype=np.float64))) for _ in range(M)]
        opts = [torch.optim.Adam([p], lr=gamma, betas=(0.0, beta), eps=e) for p in params]
        for t in range(1, steps + 1):
            for m, (p, opt) in enumerate(zip(params, opts)):
                opt.zero_grad()
                loss = 0.5 * (A_t[m] * p * p).sum() - (b_t[m] * p).sum()
                loss.backward()
                if noise:
                    p.grad.add_(torch.randn(d, generator=gen, dtype=torch.float64), alpha=sigma)
                opt.step()
            if t % H == 0:
                with torch.no_grad():
                    xbar = torch.stack([p for p in params]).mean(0)
                    for p in params:
                        p.copy_(xbar)
        out.append(torch.stack([p.detach() for p in params]).numpy())
    return np.stack(out)
