"""An independent per-client implementation of SAVIC, written as published Local SGD code is:
Python loops over clients and steps, one vector per client, each rule's formula spelled out.

It follows ``docs/algorithm.md`` line by line and shares no code with the simulator. It is
deterministic: quadratics without noise (or any client gradients given as functions,
``savic_loop``), OASIS with the exact Hessian diagonal.
"""
from __future__ import annotations

import numpy as np


def _dense(A):
    A = np.asarray(A, dtype=np.float64)
    return [np.diag(a) for a in A] if A.ndim == 2 else [a for a in A]


class _Scaler:
    """One copy of a rule's state; ``D()`` is the clipped diagonal."""

    def __init__(self, rule, beta, e, s0):
        self.rule, self.beta, self.e = rule, beta, e
        if rule == "identity":
            self.d = np.ones_like(s0)
        elif rule == "rmsprop":
            self.v = s0.copy()
        elif rule == "adam":
            self.k = 1
            self.v = (1 - self._b(1)) * s0
            self.c = 1 - self._b(1)
        elif rule == "oasis":
            self.d = s0.copy()
        self.k = 1 if rule == "adam" else 0

    def _b(self, k):
        return self.beta(k) if callable(self.beta) else self.beta

    def update(self, s):
        if self.rule == "identity":
            return
        self.k += 1
        b = self._b(self.k)
        if self.rule == "rmsprop":
            self.v = b * self.v + (1 - b) * s
        elif self.rule == "adam":
            self.v = b * self.v + (1 - b) * s
            self.c = b * self.c + (1 - b)
        else:
            self.d = b * self.d + (1 - b) * s

    def D(self):
        if self.rule == "identity":
            return self.d
        if self.rule == "rmsprop":
            return np.maximum(self.e, np.sqrt(self.v))
        if self.rule == "adam":
            return np.maximum(self.e, np.sqrt(self.v / self.c))
        return np.maximum(self.e, np.abs(self.d))


def reference_savic(A, b, rule, gamma, steps, sync_moments, scaling, x0, beta=0.9, e=1e-2, trace=None):
    """Final client iterates (M, d) of SAVIC on ``f_m = ½xᵀA_m x − b_mᵀx`` without noise.

    ``trace``, a list, receives ``(t, D)`` each time ``D̂`` changes, after step ``t`` (``t = 0``
    for the initial one): ``D`` of shape (1, d) in global scaling, (M, d) in local scaling.
    """
    As = _dense(A)
    b = np.asarray(b, dtype=np.float64)

    def grad(m, x):
        return As[m] @ x - b[m]

    def stat(m, x):
        if rule == "oasis":
            return np.diag(As[m]).copy()
        g = grad(m, x)
        return g * g

    return savic_loop(grad, stat, len(As), rule, gamma, steps, sync_moments, scaling, x0, beta, e, trace)


def savic_loop(grad, stat, M, rule, gamma, steps, sync_moments, scaling, x0, beta=0.9, e=1e-2, trace=None):
    """SAVIC for any deterministic client gradients ``grad(m, x)`` and statistics ``stat(m, x)``
    (arguments and result as :func:`reference_savic`)."""
    syncs = set(sync_moments)
    xs = [np.array(x0, dtype=np.float64) for _ in range(M)]
    if scaling == "global":
        scaler = _Scaler(rule, beta, e, sum(stat(m, xs[m]) for m in range(M)) / M)
        if trace is not None:
            trace.append((0, scaler.D()[None]))
        for t in range(steps):
            synced = (t + 1) in syncs
            stats = [stat(m, xs[m]) for m in range(M)] if synced else None
            D = scaler.D()
            for m in range(M):
                xs[m] = xs[m] - gamma * grad(m, xs[m]) / D
            if synced:
                avg = sum(xs) / M
                xs = [avg.copy() for _ in range(M)]
                scaler.update(sum(stats) / M)
                if trace is not None:
                    trace.append((t + 1, scaler.D()[None]))
    else:
        scalers = [_Scaler(rule, beta, e, stat(m, xs[m])) for m in range(M)]
        if trace is not None:
            trace.append((0, np.stack([sc.D() for sc in scalers])))
        for t in range(steps):
            for m in range(M):
                s = stat(m, xs[m])
                xs[m] = xs[m] - gamma * grad(m, xs[m]) / scalers[m].D()
                scalers[m].update(s)
            if trace is not None:
                trace.append((t + 1, np.stack([sc.D() for sc in scalers])))
            if (t + 1) in syncs:
                avg = sum(xs) / M
                xs = [avg.copy() for _ in range(M)]
    return np.stack(xs)


def local_sgd(A, b, gamma, steps, H, x0):
    """Plain Local SGD without noise: the identity rule's expected trajectory."""
    As = _dense(A)
    xs = [np.array(x0, dtype=np.float64) for _ in As]
    for t in range(steps):
        xs = [x - gamma * (Am @ x - bm) for x, Am, bm in zip(xs, As, b)]
        if (t + 1) % H == 0:
            avg = sum(xs) / len(xs)
            xs = [avg.copy() for _ in xs]
    return np.stack(xs)
