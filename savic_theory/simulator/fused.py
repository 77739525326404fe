r"""Fused fast paths of :func:`savic_theory.simulate` for quadratics: NumPy on the CPU, CuPy on the GPU.

The reference loop in :mod:`savic_theory.simulator.engine` stays the source of truth. This module
computes the same :class:`SimulationResult` (same recording, drift, divergence handling, and the
same draws from the host generator in the same order) with fewer passes over memory:

* **CPU** (NumPy): every array of shape ``(runs, clients, d)`` is allocated once and updated with
  ``out=`` ufuncs, so a step creates no temporaries of that size. In global scaling ``D̂`` only
  changes at synchronisation, so for diagonal quadratics the local step between syncs is the
  affine map ``x ← P ⊙ x + q`` with ``P = 1 − (γ/D̂) ⊙ A_m`` and ``q = (γ/D̂) ⊙ b_m`` rebuilt
  whenever ``D̂`` changes (two passes instead of five). Dense client matrices shared by all runs
  turn the gradient into one GEMM per client (``A_m`` read once per step, not once per run).
  Noise-free steps with no sync or record in between are taken in one call.
* **CPU, compiled** (where Numba is installed; ``fused="numpy"`` opts out): the kernels of
  :mod:`._cpu_kernels` take those steps one client row at a time while it sits in cache, fold
  the step before a sync, the average and the client mean of ``g ⊙ g`` into one pass, and
  compute ``x̄`` and the consensus error in one pass. They perform the NumPy path's operations
  in its order, so they give its numbers bit for bit (the consensus error, summed over ``d`` in
  another order, to round-off).
* **GPU** (CuPy, imported lazily): one elementwise kernel per local step; the client average
  streams through a kernel in which each thread sums one coordinate over the clients (the
  coalesced layout), instead of ``mean(axis=1)``.
* **Local scaling**: the rule's ``update``/``diagonal`` functions are *traced* once with
  placeholder arrays into a small elementwise program. On the CPU the program is replayed with
  ``out=`` buffers (the same ufuncs on the same operands as the rule functions, so the same
  numbers) or, for large runs where Numba is installed, emitted as the body of a generated
  Numba kernel that takes all the noise-free steps up to the next sync or record on one client
  row while it sits in cache (bit for bit the replay's numbers; kept in an on-disk cache, see
  :func:`._cpu_kernels.compile_generated`); on the GPU it is emitted as the body of one
  generated CUDA kernel. A new rule needs no hand-written kernel; a rule that uses an
  operation the tracer does not know falls back to the reference loop.

Rounding: the CPU path performs the reference's operations in the reference's order except for
the affine form above and the GEMM/flattened products of dense and eigenbasis problems; both
change a step by a few units in the last place. Tests pin agreement with the reference to
``1e-12`` relative in float64, with and without noise.

Example
-------
>>> import numpy as np
>>> from savic_theory import Quadratic, rules, simulate
>>> prob = Quadratic.random(dim=8, n_clients=4, heterogeneity=1.0, seed=0)
>>> fast = simulate(prob, rules.adam(beta=0.9), gamma=0.1, steps=50, sync_every=5, fused=True)
>>> ref = simulate(prob, rules.adam(beta=0.9), gamma=0.1, steps=50, sync_every=5, fused=False)
>>> bool(np.allclose(fast.x, ref.x, rtol=1e-12, atol=0))
True
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from typing import Any

import numpy as np

from .._backend import namespace, namespace_name, to_numpy
from ..problems.quadratic import Quadratic
from ..rules import ScalingRule, Statistic, as_rule, clip, state_type
from .engine import Recorder, RunSetup, drift_since_sync, initial_scaling, update_scaling
from .result import HISTORY_KEYS, SimulationResult

__all__ = ["simulate_fused", "unsupported_reason", "trace_rule", "RuleProgram", "Untraceable"]


# =========================================================================================
# Tracing a rule into an elementwise program
# =========================================================================================
class Untraceable(Exception):
    """A rule function used something the elementwise tracer cannot express."""


# op name -> (NumPy/CuPy ufunc name, CUDA C expression template, Numba expression template)
_OPS = {
    "add": ("add", "({0} + {1})", "({0} + {1})"),
    "subtract": ("subtract", "({0} - {1})", "({0} - {1})"),
    "multiply": ("multiply", "({0} * {1})", "({0} * {1})"),
    "divide": ("divide", "({0} / {1})", "({0} / {1})"),
    "negative": ("negative", "(-{0})", "(-{0})"),
    "sqrt": ("sqrt", "sqrt({0})", "np.sqrt({0})"),
    "abs": ("absolute", "fabs({0})", "abs({0})"),
    "maximum": ("maximum", "savic_max({0}, {1})", "_nan_max({0}, {1})"),
    "minimum": ("minimum", "savic_min({0}, {1})", "_nan_min({0}, {1})"),
    "exp": ("exp", "exp({0})", "np.exp({0})"),
    "log": ("log", "log({0})", "np.log({0})"),
    "square": ("square", "({0} * {0})", "({0} * {0})"),
    # a selection (rules over runs keep each run's kind with it); the condition is a per-run
    # mask that reaches the kernels as a number of the run's dtype, 0 for false
    "where": ("where", "(({0}) != T(0) ? ({1}) : ({2}))", "(({1}) if ({0}) != 0 else ({2}))"),
}

# NumPy's maximum/minimum propagate NaN; C's fmax/fmin do not, so the kernels use these.
_CUDA_PREAMBLE = r"""
template <typename U> __device__ __forceinline__ U savic_max(U a, U b) {
    return (a != a) ? a : ((b != b) ? b : (a > b ? a : b));
}
template <typename U> __device__ __forceinline__ U savic_min(U a, U b) {
    return (a != a) ? a : ((b != b) ? b : (a < b ? a : b));
}
"""


class _Node:
    """A value inside a traced rule function: an input, a constant, or one elementwise op.

    ``big`` marks values that depend on a full ``(runs, clients, d)`` input; the others are
    small (β, e, scalar state such as Adam's bias-correction mass) and are evaluated eagerly.
    """

    __slots__ = ("op", "args", "shape", "big", "value", "name")
    __array_ufunc__ = None  # NumPy operands defer to the node's reflected operators

    def __init__(self, op, args=(), shape=(), big=False, value=None, name=None):
        self.op, self.args, self.shape, self.big = op, tuple(args), tuple(shape), big
        self.value, self.name = value, name

    # arithmetic ---------------------------------------------------------------------------
    def __add__(self, other):
        return _apply("add", self, other)

    def __radd__(self, other):
        return _apply("add", other, self)

    def __sub__(self, other):
        return _apply("subtract", self, other)

    def __rsub__(self, other):
        return _apply("subtract", other, self)

    def __mul__(self, other):
        return _apply("multiply", self, other)

    def __rmul__(self, other):
        return _apply("multiply", other, self)

    def __truediv__(self, other):
        return _apply("divide", self, other)

    def __rtruediv__(self, other):
        return _apply("divide", other, self)

    def __neg__(self):
        return _apply("negative", self)

    def __pos__(self):
        return self

    def __bool__(self):
        raise Untraceable("the rule branches on array values")

    def __array__(self, *args, **kwargs):
        raise Untraceable("the rule converts a traced value to a NumPy array")

    def __repr__(self):
        return f"_Node({self.op}, shape={self.shape}, big={self.big})"


def _lift(v) -> _Node:
    if isinstance(v, _Node):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
        return _Node("const", value=v)
    raise Untraceable(f"unsupported operand {v!r} (only arrays and finite Python numbers)")


def _apply(op, *operands) -> _Node:
    nodes = [_lift(v) for v in operands]
    try:
        shape = np.broadcast_shapes(*(n.shape for n in nodes))
    except ValueError as exc:
        raise Untraceable(f"shapes do not broadcast in {op}") from exc
    return _Node(op, nodes, shape, any(n.big for n in nodes))


def _traced(op: str, arity: int):
    """The traced stand-in of the elementwise function ``op`` of ``_OPS`` (``arity`` operands)."""
    if arity == 1:
        return staticmethod(lambda a: _apply(op, a))
    if arity == 3:
        return staticmethod(lambda a, b, c: _apply(op, a, b, c))
    return staticmethod(lambda a, b: _apply(op, a, b))


class _TraceNamespace:
    """Stands in for ``xp`` while a rule function is traced; unknown names are untraceable."""

    def __getattr__(self, name):
        raise Untraceable(f"xp.{name} is not supported by the fused path")

    sqrt = _traced("sqrt", 1)
    abs = absolute = _traced("abs", 1)
    exp = _traced("exp", 1)
    log = _traced("log", 1)
    square = _traced("square", 1)
    negative = _traced("negative", 1)
    maximum = _traced("maximum", 2)
    minimum = _traced("minimum", 2)
    add = _traced("add", 2)
    subtract = _traced("subtract", 2)
    multiply = _traced("multiply", 2)
    divide = _traced("divide", 2)
    where = _traced("where", 3)

    @staticmethod
    def ones_like(a):
        a = _lift(a)
        return _Node("fill", (a,), a.shape, a.big, value=1.0)

    @staticmethod
    def zeros_like(a):
        a = _lift(a)
        return _Node("fill", (a,), a.shape, a.big, value=0.0)


class RuleProgram:
    r"""One local-scaling update of a rule as an elementwise program.

    Traced from ``rule.update`` then ``clip(rule.diagonal(·), e)``: inputs are the state
    components ``st0, st1, …``, the statistic ``s`` (shape ``(runs, clients, d)``), ``beta``
    and ``e`` (shape ``(runs, 1, 1)``); outputs are the new state components and the new
    ``D̂``. ``run`` replays it with NumPy/CuPy ufuncs (``out=`` buffers for the big values);
    ``cuda_body`` writes it as CUDA C for a generated kernel.

    Parameters
    ----------
    rule : ScalingRule
    state_shapes : sequence of tuples
        Shapes of the state components (from ``rule.init``).
    full : tuple
        ``(runs, clients, d)``.
    """

    def __init__(self, rule: ScalingRule, state_shapes, full):
        self.rule = rule
        self.full = tuple(full)
        small = (full[0], 1, 1)
        self.state_in = [_Node("input", shape=sh, big=tuple(sh) == self.full, name=f"st{i}")
                         for i, sh in enumerate(state_shapes)]
        for node in self.state_in:
            if not node.big and _size(node.shape) > full[0]:
                raise Untraceable(f"state component of shape {node.shape} is neither per-run nor full")
        s = _Node("input", shape=self.full, big=True, name="s")
        beta = _Node("input", shape=small, name="beta")
        e = _Node("input", shape=small, name="e")
        txp = _TraceNamespace()
        try:
            state_cls = state_type(rule)
            new_state = rule.update(state_cls(*self.state_in), s, beta, txp)
            D = clip(rule.diagonal(new_state, txp), e, txp)
        except Untraceable:
            raise
        except Exception as exc:  # the rule did something outside the traced subset
            raise Untraceable(f"{type(exc).__name__}: {exc}") from exc
        outs = [_lift(v) for v in tuple(new_state)] + [_lift(D)]
        if len(outs) - 1 != len(self.state_in):
            raise Untraceable("update changed the number of state components")
        for o, i in zip(outs, self.state_in):
            if o.big != i.big or (o.big and o.shape != self.full):
                raise Untraceable("update changed the shape of a state component")
        if not outs[-1].big or outs[-1].shape != self.full:
            raise Untraceable("local scaling needs a full (runs, clients, d) diagonal")
        self.outputs = outs
        self.order = _topological(outs)
        for node in self.order:
            if node.big and node.op not in ("input",) and node.shape != self.full:
                raise Untraceable(f"intermediate of shape {node.shape} in the local update")
        self._uses: dict[int, int] = {}
        for node in self.order:
            for a in node.args:
                self._uses[id(a)] = self._uses.get(id(a), 0) + 1
        for o in outs:
            self._uses[id(o)] = self._uses.get(id(o), 0) + 1

    def big_ops(self) -> int:
        """Number of full-size elementwise passes one replay makes on the CPU."""
        return sum(1 for n in self.order if n.big and n.op not in ("input", "const"))

    # replay -------------------------------------------------------------------------------
    def run(self, env: dict, mod, pool: "_Pool", consumable=frozenset()):
        """Evaluate with ufuncs of ``mod`` (numpy or cupy); big values go to ``pool`` buffers.

        ``env`` maps input names to arrays; big inputs listed in ``consumable`` are returned to
        the pool after their last use. Returns the list of outputs (new state…, D̂).
        """
        vals: dict[int, Any] = {}
        left = dict(self._uses)
        owned: set[int] = set()
        for node in self.order:
            op = node.op
            if op == "input":
                v = env[node.name]
                if node.name in consumable:
                    owned.add(id(node))
            elif op == "const":
                v = node.value
            elif op == "fill":
                if node.big:
                    v = pool.take()
                    v.fill(node.value)
                    owned.add(id(node))
                else:
                    v = mod.full_like(vals[id(node.args[0])], node.value)
            else:
                fn = getattr(mod, _OPS[op][0])
                args = [vals[id(a)] for a in node.args]
                if node.big and op == "where":  # no out= for where: the two copies it makes
                    v = pool.take()
                    mod.copyto(v, args[2])
                    mod.copyto(v, args[1], where=mod.broadcast_to(mod.not_equal(args[0], 0), v.shape))
                    owned.add(id(node))
                elif node.big:
                    v = fn(*args, out=pool.take())
                    owned.add(id(node))
                else:
                    v = fn(*args)
            vals[id(node)] = v
            for a in node.args:
                left[id(a)] -= 1
                if left[id(a)] == 0 and id(a) in owned:
                    pool.give(vals[id(a)])
                    owned.discard(id(a))
        for node in self.state_in:  # a consumed state component the update never read
            if node.name in consumable and id(node) not in vals:
                pool.give(env[node.name])
        results, seen = [], set()
        for o in self.outputs:
            v = vals[id(o)]
            # two outputs sharing one buffer, or an output that is an input the caller keeps
            # writing (the statistic s, kept in the state as it is): give each its own
            if o.big and (id(v) in seen or id(o) not in owned):
                w = pool.take()
                w[...] = v
                v = w
            seen.add(id(v))
            results.append(v)
        return results

    def small_values(self, env: dict, mod):
        """Evaluate the small (per-run) nodes with ufuncs of ``mod``.

        Returns ``(params, small_state)``: the values that big nodes read, keyed by the kernel
        parameter names of :meth:`cuda_body`, and the new small state components in order.
        """
        vals: dict[int, Any] = {}
        for node in self.order:
            if node.big:
                continue
            if node.op == "input":
                vals[id(node)] = env[node.name]
            elif node.op == "const":
                vals[id(node)] = node.value
            elif node.op == "fill":
                vals[id(node)] = mod.full_like(vals[id(node.args[0])], node.value)
            else:
                vals[id(node)] = getattr(mod, _OPS[node.op][0])(*(vals[id(a)] for a in node.args))
        params = {name: vals[id(node)] for name, node in self._small_params().items()}
        small_state = [vals[id(o)] for o in self.outputs[:-1] if not o.big]
        return params, small_state

    def _small_params(self) -> dict:
        """Small non-constant nodes read by big nodes (they become kernel inputs ``k0, k1…``)."""
        params: dict[str, _Node] = {}
        taken: set[int] = set()
        for node in self.order:
            if not node.big:
                continue
            for a in node.args:
                if not a.big and a.op != "const" and id(a) not in taken:
                    params[f"k{len(params)}"] = a
                    taken.add(id(a))
        return params

    def selectors(self) -> list[str]:
        """The small parameters (``k…``) that select a ``where`` (a rule over runs' kind masks)."""
        params = {id(n): k for k, n in self._small_params().items()}
        out = []
        for node in self.order:
            if node.op == "where" and node.big and id(node.args[0]) in params:
                name = params[id(node.args[0])]
                if name not in out:
                    out.append(name)
        return out

    def _resolve(self, node, fixed: dict):
        """``node`` with every big ``where`` whose selector is in ``fixed`` replaced by its branch
        (a small ``where`` is a kernel parameter, selected per run on the host: its branches
        need not be parameters themselves)."""
        params = {id(n): k for k, n in self._small_params().items()}
        while node.op == "where" and node.big and params.get(id(node.args[0])) in fixed:
            node = node.args[1] if fixed[params[id(node.args[0])]] else node.args[2]
        return node

    def _big_lines(self, which: int, const, input_name, fixed=None) -> tuple[list[str], dict]:
        """One assignment per big node, in order, with expression template ``which`` of ``_OPS``
        (1: CUDA C, 2: Numba); ``const(value)`` writes a constant, small parameters are
        ``k0, k1…``, big inputs are named by ``input_name``. Returns the lines and the names.

        ``fixed`` maps selector names (:meth:`selectors`) to their truth: each such ``where`` is
        its branch, and only the nodes the outputs then need get a line (a specialised body)."""
        fixed = fixed or {}
        names = {id(n): k for k, n in self._small_params().items()}
        for node in self.order:
            if node.op == "input" and node.big:
                names[id(node)] = input_name(node.name)
        live: set[int] = set()
        stack = [self._resolve(o, fixed) for o in self.outputs]
        while stack:
            node = stack.pop()
            if id(node) in live:
                continue
            live.add(id(node))
            stack.extend(self._resolve(a, fixed) for a in node.args)

        def arg(a):
            a = self._resolve(a, fixed)
            return const(float(a.value)) if a.op == "const" else names[id(a)]

        lines = []
        for node in self.order:
            if not node.big or node.op == "input" or id(node) not in live:
                continue
            if node.op == "fill":
                expr = const(float(node.value))
            else:
                expr = _OPS[node.op][which].format(*(arg(a) for a in node.args))
            names[id(node)] = f"v{len(lines)}"
            lines.append(f"v{len(lines)} = {expr}")
        for o in self.outputs:
            if o.big:
                names[id(o)] = arg(o)
        return lines, names

    def cuda_body(self) -> tuple[str, list[str], list[str]]:
        """CUDA C for the big nodes: ``(body, small parameter names, big state names)``.

        The body reads the old state from locals ``st0_old, st1_old…`` and the statistic from
        the local ``s_``; it defines ``D_new`` and assigns the big state outputs ``st0, st1…``
        (kernel output parameters). Constants are written with ``repr`` (exact round trip).
        """
        lines, names = self._big_lines(1, lambda v: f"T({v!r})",
                                       lambda n: "s_" if n == "s" else f"{n}_old")
        out, state_params = self._output_lines(names, lambda v: f"const T D_new = {v};",
                                               lambda name, v: f"{name} = {v};")
        return "\n".join([f"const T {line};" for line in lines] + out), list(self._small_params()), state_params

    def _output_lines(self, names: dict, d_line, state_line) -> tuple[list[str], list[str]]:
        """The lines that set ``D_new`` (``d_line(value)``) and each big state output
        (``state_line(name, value)``), and the names of the big state components."""
        lines, state_params = [d_line(names[id(self.outputs[-1])])], []
        for o, inp in zip(self.outputs[:-1], self.state_in):
            if o.big:
                state_params.append(inp.name)
                lines.append(state_line(inp.name, names[id(o)]))
        return lines, state_params

    def numba_body(self) -> tuple[list[str], list[str], list[str], list[float]]:
        """Python for the big nodes, for a generated Numba kernel.

        Returns ``(lines, small parameter names, big state names, constants)``. The lines read
        the old state from locals ``st0_old…``, the statistic from ``s_``, small parameters from
        locals ``k0…`` and constants from locals ``c0…`` (the kernel loads them from an array of
        the run's dtype, as NumPy casts a Python float operand to the array's dtype); they
        define ``D_new`` and ``st0_new…`` for the big state outputs.
        """
        (lines,), small, state_params, consts = self.numba_bodies([None])
        return lines, small, state_params, consts

    def numba_bodies(self, settings) -> tuple[list[list[str]], list[str], list[str], list[float]]:
        """:meth:`numba_body` once per setting of the selectors (``fixed`` of :meth:`_big_lines`;
        ``None``: the full body), with one table of constants for all."""
        consts: list[float] = []
        keys: list[str] = []  # repr keys: NaN constants compare unequal to themselves

        def const(v):
            if repr(v) not in keys:
                keys.append(repr(v))
                consts.append(v)
            return f"c{keys.index(repr(v))}"

        bodies = []
        for fixed in settings:
            lines, names = self._big_lines(2, const, lambda n: "s_" if n == "s" else f"{n}_old", fixed)
            out, state_params = self._output_lines(names, lambda v: f"D_new = {v}",
                                                   lambda name, v: f"{name}_new = {v}")
            bodies.append(lines + out)
        return bodies, list(self._small_params()), state_params, consts


def _size(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def _topological(outputs) -> list:
    order, seen = [], set()

    def visit(n):
        if id(n) in seen:
            return
        seen.add(id(n))
        for a in n.args:
            visit(a)
        order.append(n)

    for o in outputs:
        visit(o)
    return order


def trace_rule(rule: ScalingRule, state_shapes, full) -> RuleProgram:
    """Trace ``rule``'s local-scaling update into a :class:`RuleProgram` (raises ``Untraceable``).

    Example
    -------
    >>> from savic_theory import rules
    >>> prog = trace_rule(rules.rmsprop(beta=0.9), [(2, 3, 4)], (2, 3, 4))
    >>> prog.big_ops()  # β·v, (1−β)·s, +, √, |·|, max(·, e)
    6
    """
    return RuleProgram(rule, state_shapes, full)


class _Workspace:
    """Host buffers kept between calls, keyed by shape and dtype, at most ``limit`` bytes.

    Fresh memory costs page faults (about 1 ms per 4 MB on the development machines), which
    would dominate short runs. A call takes its buffers out and gives them back when it ends,
    so concurrent calls never share a buffer.
    """

    def __init__(self, limit: int = 128 * 2**20):
        self.limit = limit
        self._free: dict = {}
        self._lent: list[np.ndarray] = []  # bases of returned iterates, oldest first
        self._bytes = 0
        self._lock = threading.Lock()
        # a base that nothing else refers to, read the way lend() reads its bases: the number
        # of references such a base shows (the interpreter's own ones differ between versions)
        self._unreferenced = [np.empty(0)]

    #: lent buffers remembered per shape and dtype (a sweep's calls return one shape)
    LENT_PER_KEY = 2

    def lend(self, shape, dtype) -> np.ndarray:
        """A buffer that the caller keeps (the iterate a run returns): a view of memory lent
        before and referenced by nothing any more, else fresh memory.

        Every view of the returned array (slices, reshapes, ``np.asarray``) holds its base, so
        a base with no more references than one nobody holds has no live view left, and its
        memory can be written again without anybody seeing it change. At most
        :attr:`LENT_PER_KEY` bases per shape and dtype, and at most half of ``limit`` in all,
        are remembered (the oldest are forgotten: their memory is freed with their last view).
        """
        shape, dtype = tuple(shape), np.dtype(dtype)
        with self._lock:
            free = sys.getrefcount(self._unreferenced[0])
            lent = self._lent
            for k in range(len(lent)):
                if lent[k].shape == shape and lent[k].dtype == dtype and sys.getrefcount(lent[k]) <= free:
                    lent.append(lent.pop(k))  # the most recently used last
                    return lent[-1][...]
            base = np.empty(shape, dtype=dtype)
            lent.append(base)
            same = [i for i, b in enumerate(lent) if b.shape == shape and b.dtype == dtype]
            for i in reversed(same[:-self.LENT_PER_KEY]):
                del lent[i]
            while sum(b.nbytes for b in lent) > self.limit // 2:
                del lent[0]
            return base[...]

    def take(self, shape, dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            free = self._free.get(key)
            if free:
                buf = free.pop()
                self._bytes -= buf.nbytes
                return buf
        return np.empty(shape, dtype=dtype)

    def give(self, buffers) -> None:
        with self._lock:
            for buf in buffers:
                if self._bytes + buf.nbytes <= self.limit:
                    self._free.setdefault((buf.shape, buf.dtype.str), []).append(buf)
                    self._bytes += buf.nbytes


_WORKSPACE = _Workspace()


class _Pool:
    """Interchangeable full-size scratch buffers, allocated on demand and then reused."""

    def __init__(self, alloc):
        self._alloc, self._free = alloc, []

    def take(self):
        return self._free.pop() if self._free else self._alloc()

    def give(self, buf):
        self._free.append(buf)


# =========================================================================================
# What runs where
# =========================================================================================
def unsupported_reason(problem, rule, scaling="global", backend=None, x0=None) -> str | None:
    """Why the fused path cannot run this configuration, or ``None`` when it can.

    ``rule`` as :func:`savic_theory.simulate` takes it: a rule, a name, or a list of them.

    Example
    -------
    >>> from savic_theory import Quadratic, rules
    >>> prob = Quadratic.random(dim=3, n_clients=2, seed=0)
    >>> unsupported_reason(prob, rules.adam(), "local") is None
    True
    >>> unsupported_reason(prob, rules.adam(), backend="array_api_strict")
    'backend array_api_strict runs on the reference loop (the fused path covers numpy and cupy)'
    """
    rule = as_rule(rule)
    if not isinstance(rule, ScalingRule):
        return "rule is not a ScalingRule"
    return _unsupported(problem, rule, scaling, namespace(backend, like=x0), (rule.runs or 2, 3, 4))


def _unsupported(problem, rule: ScalingRule, scaling: str, xp, full) -> str | None:
    """:func:`unsupported_reason` for a resolved call; local rules are traced at shape ``full``."""
    if not isinstance(problem, Quadratic):
        return (f"{type(problem).__name__} problems run on the reference loop "
                "(the fused path covers Quadratic)")
    name = namespace_name(xp)
    if name not in ("numpy", "cupy"):
        return f"backend {name} runs on the reference loop (the fused path covers numpy and cupy)"
    if scaling == "local" and not rule.is_static:
        try:
            RuleProgram(rule, _probe_state_shapes(rule, full), full)
        except Untraceable as exc:
            return f"rule {rule.name!r} cannot be traced for local scaling ({exc})"
    return None


#: the generated local-scaling kernel serves runs of at least this many steps × coordinates;
#: smaller ones replay the program with ufuncs (the same numbers), which costs less than loading
#: the kernel (tens of milliseconds from the cache; about a second on its first compilation)
_LOCAL_KERNEL_MIN_WORK = 1 << 22

#: the generated global-scaling update is loaded once the calls of a process that could use it
#: have had this many syncs of every run between them: loading it costs about 10 ms from the
#: cache, and it saves about 0.1 ms of NumPy calls per sync (32 runs × d = 256), so the syncs
#: before it never cost more than it saves
_GLOBAL_KERNEL_MIN_SYNCS = 128
#: the loaded update kernels, and the syncs seen so far of those not loaded, by source
_GLOBAL_KERNELS: dict = {}
_GLOBAL_SYNCS: dict = {}


@contextlib.contextmanager
def eager_kernels():
    """Inside it, a call loads every generated kernel it can use (for timing a sweep's steady
    state: otherwise a process loads the global update's kernel part-way through, once its calls
    have had ``_GLOBAL_KERNEL_MIN_SYNCS`` syncs between them)."""
    global _GLOBAL_KERNEL_MIN_SYNCS
    before, _GLOBAL_KERNEL_MIN_SYNCS = _GLOBAL_KERNEL_MIN_SYNCS, 0
    try:
        yield
    finally:
        _GLOBAL_KERNEL_MIN_SYNCS = before

#: below this many coordinates per thread a kernel call runs on one thread (splitting costs
#: tens of microseconds, which a call this small does not win back)
_MIN_WORK_PER_THREAD = 1 << 15


def _run_chunks(runs: int, per_run: int, threads: int) -> list[tuple[int, int]]:
    """Split ``range(runs)`` into at most ``threads`` contiguous ``(lo, hi)`` blocks."""
    n = max(1, min(threads, runs, runs * per_run // _MIN_WORK_PER_THREAD))
    edges = [runs * i // n for i in range(n + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]


#: (kernel, even split, dtype) -> the split in use, carried from call to call (see _CPUOps._launch)
_BALANCED: dict = {}


def _timed_call(kernel, args) -> float:
    """``kernel(*args)`` on a worker thread; returns when it finished (``perf_counter``)."""
    kernel(*args)
    return time.perf_counter()


def _rebalance(chunks, own_time: float, own_end: float, last_end: float) -> list[tuple[int, int]]:
    """The next split of a kernel's runs: the calling thread's block (the first) grows by a
    run when the last worker finished more than a run's time after it, and shrinks by one in
    the opposite case; the workers share the rest evenly. ``own_time``: the first block's time."""
    (lo, hi), n = chunks[0], len(chunks)
    runs, own = chunks[-1][1], hi - lo
    per_run = own_time / own
    if last_end - own_end > per_run and own < runs - (n - 1):
        own += 1
    elif own_end - last_end > per_run and own > 1:
        own -= 1
    else:
        return chunks
    rest = runs - own
    edges = [own + rest * i // (n - 1) for i in range(n)]
    return [(0, own)] + list(zip(edges[:-1], edges[1:]))


@functools.lru_cache(maxsize=1)
def _thread_pool():
    """The worker threads of the compiled kernels (created on first use, then kept)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="savic")


def _compiled_kernels():
    """The Numba kernels of :mod:`._cpu_kernels`, or ``None`` where Numba is not installed or
    cannot set them up (say, no writable folder for its cache: a warning, once, says so)."""
    try:
        from . import _cpu_kernels
    except ImportError:
        return None
    except Exception as exc:  # Numba is there but failed: the NumPy path gives the same numbers
        _warn_once(f"savic_theory: the compiled CPU kernels are not available ({type(exc).__name__}: {exc}); "
                   "the NumPy path runs instead")
        return None
    return _cpu_kernels


@functools.lru_cache(maxsize=8)
def _warn_once(message: str) -> None:
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _probe_state_shapes(rule, full):
    R = full[0]
    beta = np.full((R, 1, 1), 0.5)
    try:
        state = rule.init(np.ones(full), beta, np)
    except Exception as exc:
        raise Untraceable(f"init failed on a test array: {exc}") from exc
    return [np.shape(c) for c in state]


# =========================================================================================
# Entry point
# =========================================================================================
def simulate_fused(mode, S: RunSetup, t_start: float):
    """Run ``simulate`` on the fused path; ``None`` when the reference loop should run instead.

    ``S`` is the checked call (:func:`savic_theory.simulator.engine.prepare`). ``mode`` is
    ``"auto"`` (fused when supported), ``True`` (fused or a ``ValueError`` saying why not) or
    ``"numpy"`` (as ``True``, without the compiled CPU kernels).
    """
    if not (mode is True or (isinstance(mode, str) and mode in ("auto", "numpy"))):
        raise ValueError(f"fused must be 'auto', True, 'numpy' or False, got {mode!r}")
    required = mode is True or mode == "numpy"
    reason = _unsupported(S.problem, S.rule, S.scaling, S.xp, (S.R, S.M, S.d))
    if reason is not None:
        if required:
            raise ValueError(f"fused={mode!r} is not available: {reason}")
        return None
    return _run(S, t_start, compiled=mode != "numpy")


# =========================================================================================
# The loop (mirrors engine.simulate; the array work goes through _CPUOps / _GPUOps)
# =========================================================================================
def _run(S: RunSetup, t_start: float, compiled: bool = True) -> SimulationResult:
    xp, dt, R, M, d = S.xp, S.dt, S.R, S.M, S.d
    rule, rng, schedule, local = S.rule, S.rng, S.schedule, S.local
    steps, record_every = S.steps, S.record_every
    problem = S.problem
    gpu = namespace_name(xp) == "cupy"

    dev, beta_of = S.device, S.beta_of

    gamma_arr = S.gamma_arr
    gamma_x = dev(gamma_arr.reshape(-1, 1, 1) if gamma_arr.ndim else gamma_arr, (R, 1, 1))
    e_x = dev(rule.e.reshape(-1, 1, 1) if rule.e.ndim else rule.e, (R, 1, 1))
    const = problem.constants
    x_star = dev(const.x_star, (R, d) if np.ndim(const.x_star) == 1 else const.x_star.shape)
    f_star = dev(const.f_star, (R,))
    x0_host = S.x0_host
    x0_rows = dev(x0_host if x0_host.ndim == 2 else x0_host[None], (R, d))[:, None, :]
    grad_sq = rule.statistic is Statistic.GRAD_SQUARED
    if gpu:
        ops = _GPUOps(S, gamma_x, xp.zeros((R, M, d), dtype=dt) + x0_rows)
    else:  # 0.0 + x⁰ (the engine's zeros + x⁰) in the one buffer the run keeps, handed to the caller
        ops = _CPUOps(S, gamma_x, _WORKSPACE.lend((R, M, d), dt), compiled)
        # where only the compiled kernels and iterate() read x before the first round (global
        # scaling, g ⊙ g or static rules), the rows are written out only when something reads them
        ops.start_from(x0_rows, lazy=ops.has_mean_grad_squared and not local and (grad_sq or rule.is_static))
    x = ops.x

    statistic = S.statistic

    # --- initial scaling from S(x⁰): the engine's code (g ⊙ g in the run's buffers on the CPU)
    k, stat_max, state, D = initial_scaling(
        S, x, e_x, None if gpu else (lambda: ops.initial_grad_squared(rng)),
        (lambda: ops.initial_mean_grad_squared(rng)) if not (gpu or local) and ops.has_mean_grad_squared else None)

    program = None
    global_kernel = False
    if local and not rule.is_static:
        program = RuleProgram(rule, [tuple(c.shape) for c in state], (R, M, d))
        state, D = ops.adopt_local(program, list(state), D)
    else:
        ops.scaling_changed(D)
        global_kernel = not local and ops.adopt_global(S, state)

    # --- bookkeeping (the engine's Recorder) -------------------------------------------------
    rec = Recorder(S)
    alive = rec.alive
    run_max = run_min = None

    def record(t):
        host, xbar = ops.record_values(x, D, stat_max, x_star, f_star, S.G_hat)
        rec.record(t, host, ops.iterate, xbar)  # x is read (and written out) only if a run diverged

    bar = None
    if S.progress:
        from ..cli._common import progress as _progress

        bar = _progress(steps, f"simulate {rule.name}/{S.scaling} (fused)")
    # noise-free steps with D̂ fixed and no event before the next sync or record: one call, or
    # none when the back end folds them into the one-pass sync step that follows
    skip = not problem.noise and (rule.is_static or not local)
    per_run_stat = rule.statistic is Statistic.PER_RUN
    one_pass_sync = not local and (grad_sq or rule.is_static or per_run_stat)
    before = 0  # steps deferred into the next sync step
    # noise-free, the averaged rows may stay unwritten: the next round starts from x̄ itself
    lazy = not problem.noise
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        record(0)
        t = 0
        while t < steps:
            if not alive.any():
                break
            if skip:
                next_record = min((t // record_every + 1) * record_every, steps)
                next_sync = schedule.next_sync(t)
                n = min(next_sync - 1, next_record) - t
                if (n >= 1 and one_pass_sync and ops.folds_steps_into_sync and next_record >= next_sync
                        and bool(schedule.is_sync(next_sync).all())):
                    before, t = n, t + n
                elif n > 1:
                    ops.plain_steps(n, D)
                    t += n
                    if t == next_record:
                        record(t)
                    if bar is not None:
                        bar.update(t - bar.n)
                    continue
            t1 = t + 1
            n_local = 1  # local steps folded into one kernel call up to the next event
            if program is not None and grad_sq and ops.folds_local_steps:
                next_record = min((t // record_every + 1) * record_every, steps)
                n_local = max(1, min(schedule.next_sync(t), next_record) - t)
                t1 = t + n_local
            t = t1
            xi = ops.draw_noise(rng)
            sync = schedule.is_sync(t1)
            recording = t1 % record_every == 0 or t1 == steps
            any_sync = bool(sync.any())
            all_sync = bool(sync.all())
            averaged = False
            if rule.is_static or not (local or any_sync):
                if rule.is_static and all_sync and not local:
                    averaged = ops.sync_and_average(xi, D, False, before, recording, lazy) is not None
                    before = 0
                if not averaged:
                    ops.plain_step(xi, D)
                s = None
            elif local:
                if grad_sq:  # g ⊙ g inside the step
                    s_given = None
                elif per_run_stat:  # the probes; g ⊙ g runs take theirs in the step
                    s_given = S.probe(x, None)
                else:
                    s_given = statistic(x, None, None)
                betas = []
                for _ in range(n_local):
                    k += 1
                    betas.append(beta_of(k))
                state, D, hi, lo, s_max = ops.local_steps(xi, D, state, s_given, program, betas, e_x)
                stat_max = xp.maximum(stat_max, s_max)
                run_max = hi if run_max is None else xp.maximum(run_max, hi)
                run_min = lo if run_min is None else xp.minimum(run_min, lo)
            else:
                one_pass = (ops.sync_and_average(xi, D, True, before, recording, lazy)
                            if (grad_sq or per_run_stat) and all_sync else None)
                before = 0
                if one_pass is not None:  # step, average and client mean of g ⊙ g in one pass
                    s_mean, s_max = one_pass
                    if per_run_stat:  # the probe runs' own: a quadratic's probes do not depend on x
                        p, sel = S.probe(ops.iterate(), None), S.probe_runs
                        p_mean = xp.mean(p, axis=1, keepdims=True)
                        s_mean = xp.where(sel[:, None, None], p_mean, s_mean)
                        s_max = xp.where(sel, xp.max(xp.abs(p_mean), axis=(1, 2)), s_max)
                    averaged = True
                else:
                    s = ops.sync_step(xi, D, None if grad_sq else (lambda g: statistic(x, None, g)))
                    s_mean = ops.client_mean(s)  # D̂ is built from it: G bounds it, not each client's
                    s_max = xp.max(s_mean if grad_sq else xp.abs(s_mean), axis=(1, 2))
                if all_sync:
                    stat_max = xp.maximum(stat_max, s_max)
                else:
                    stat_max = xp.where(xp.asarray(sync), xp.maximum(stat_max, s_max), stat_max)
            if any_sync:
                if not averaged:
                    ops.average(None if all_sync else sync)
                if rule.is_static:
                    hi_h = lo_h = np.ones(R)
                elif local:
                    hi_h, lo_h, run_max, run_min = drift_since_sync(S, run_max, run_min, sync)
                else:
                    k[sync] += 1
                    if global_kernel and all_sync:  # one generated kernel, the same numbers
                        state, D, hi_h, lo_h = ops.update_global(state, D, s_mean, beta_of(k), e_x)
                    else:
                        state, D, hi_h, lo_h = update_scaling(S, state, D, s_mean, beta_of(k), e_x, sync)
                        ops.scaling_changed(D)
                rec.sync(t1, sync, hi_h, lo_h)
            if recording:
                record(t1)
            if bar is not None and (t1 - bar.n >= max(1, steps // 100) or t1 == steps):
                bar.update(t1 - bar.n)
    if bar is not None:
        bar.close()

    # --- results back to the host: x is the run's own buffer, the scratch goes back -----------
    result = rec.result(ops.iterate(), D, t_start, xbar_recorded=t >= steps)  # the loop records the last step
    ops.release()
    return result


# =========================================================================================
# CPU: NumPy with preallocated buffers
# =========================================================================================
class _Ops:
    """What both back ends share: defaults that a back end may replace with a faster kernel."""

    def plain_steps(self, n, D):
        """``n`` noise-free steps with ``D̂`` fixed (no sync, record or draw in between)."""
        for _ in range(n):
            self.plain_step(None, D)

    #: whether :meth:`sync_and_average` can take the plain steps before it (``before > 0``)
    folds_steps_into_sync = False
    #: whether :meth:`local_steps` can take several noise-free local-scaling steps in one call
    folds_local_steps = False

    def local_steps(self, xi, D, state, s_given, program, betas, e):
        """``len(betas)`` local-scaling steps (one, unless :attr:`folds_local_steps`): returns
        ``(state, D̂, max ratio, min ratio, max |s|)`` per run, the maxima over the steps."""
        (beta,) = betas
        return self.local_step(xi, D, state, s_given, program, beta, e)

    def sync_and_average(self, xi, D, with_stat, before=0, then_record=False, lazy=False):
        """``before`` plain steps, the step before a sync of every run and the average in one
        pass, or ``None`` (then nothing was done). ``then_record``: a record follows at once,
        and the back end may prepare its client statistics in the same pass. ``lazy``: the
        back end may leave the averaged rows unwritten until :meth:`iterate` or another step
        needs them."""
        return None

    def iterate(self):
        """The iterate ``x`` (runs, clients, d) as it stands, every row written."""
        return self.x

    def adopt_global(self, S: RunSetup, state) -> bool:
        """Whether :meth:`update_global` takes global scaling's update at a sync of every run
        (a generated kernel); otherwise the engine's :func:`update_scaling` does."""
        return False

    def update_global(self, state, D, s_mean, beta, e):
        """Global scaling's update at a sync of every run, as :func:`update_scaling` computes
        it (the same numbers) followed by :meth:`scaling_changed`: returns ``(state, D̂, max
        ratio, min ratio)``, the ratios ``D̂ᵏ⁺¹/D̂ᵏ`` per run as host arrays."""
        raise NotImplementedError


def _global_program(S: RunSetup, state) -> RuleProgram | None:
    """Global scaling's update traced into an elementwise program over ``(runs, 1, d)``, or
    ``None`` when the rule or its state is outside what a generated kernel takes (every state
    component ``(runs, 1, d)`` or ``(runs, 1, 1)``)."""
    R, d = S.R, S.d
    shapes = [tuple(np.shape(c)) for c in state]
    if S.rule.is_static or any(sh not in ((R, 1, d), (R, 1, 1)) for sh in shapes):
        return None
    try:
        return RuleProgram(S.rule, shapes, (R, 1, d))
    except Untraceable:
        return None


def _global_inputs(program: RuleProgram, state, D, beta, e, mod, dt):
    """The per-run parameters (``(runs, len(small))`` of ``dt``), the new small state
    components and the big state components of one global update (host or device arrays)."""
    R = D.shape[0]
    env = {"beta": beta, "e": e}
    env.update({node.name: c for c, node in zip(state, program.state_in)})
    params, small_state = program.small_values(env, mod)
    small = list(params)
    K = mod.empty((R, len(small)), dtype=dt)
    for i, name in enumerate(small):  # (runs, 1, 1) values, or one for all runs
        v = params[name]
        K[:, i] = v.reshape(R) if getattr(v, "size", 1) == R else v
    big = [c for c, node in zip(state, program.state_in) if node.big]
    return K, small_state, big


def _rows(a, shape, dt):
    """``a`` as a C-contiguous, writable array of ``shape`` and ``dt`` (a copy only if needed:
    a broadcast view or another dtype)."""
    if a.shape == shape and a.dtype == dt and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(np.broadcast_to(a, shape), dtype=dt, order="C")


def _global_state(program: RuleProgram, state, big_new, small_new):
    """The new state, of ``state``'s type, from its big and small components."""
    big, small = iter(big_new), iter(small_new)
    comps = [next(big) if node.big else next(small) for node in program.state_in]
    cls = type(state)
    return cls(*comps) if hasattr(cls, "_fields") else cls(comps)


class _CPUOps(_Ops):
    """The array work of one fused run on the host; every full-size array is allocated once.

    Attributes used by the loop: ``x`` (the iterate buffer, updated in place).
    """

    def __init__(self, S: RunSetup, gamma_x, x, compiled: bool = True):
        self.R, self.M, self.d, self.dt = S.R, S.M, S.d, S.dt
        self.full = (S.R, S.M, S.d)
        self.oracle = S.oracle
        self.form = S.problem.form
        self.noise = S.problem.noise
        self.gamma = gamma_x
        self.x = np.ascontiguousarray(x)
        self.A, self.b = self.oracle.A, self.oracle.b
        self._taken: list[np.ndarray] = []
        self.pool = _Pool(self._empty)
        self._g = self._empty()
        self._xi = self._empty() if self.noise else None
        self._xi64 = (self._empty(np.float64) if self.noise and self.dt != np.float64 else None)
        self._xbar = np.empty((S.R, S.d), dtype=self.dt)
        self._xbar_k = np.empty((S.R, 1, S.d), dtype=self.dt)
        self._P = self._q = self._c = None
        self._affine = self.form == "diagonal"
        # compiled kernels (Numba, when installed) take over the affine steps and the sync step
        self._compiled = _compiled_kernels() if compiled else None
        self._kernels = self._compiled if self._affine else None
        self._one, self._count = self.dt(1), self.dt(self.M)
        self._spread_ready = False  # x̄ and consensus of the current x already in _xbar, _consensus
        self._rows_stale = False  # every row of x is _xbar_k, not yet written (see sync_and_average)
        if self._compiled is not None:
            self._smax = np.empty(self.R, dtype=self.dt)
            self._consensus = np.empty(self.R, dtype=self.dt)
            # dense and eigenbasis gradients are BLAS products, whose threads spin for a while
            # after each call: a worker of ours beside them made a step 4-7x slower on 2 cores
            # (docs/performance.md), so their kernels run in this thread and BLAS keeps the cores
            self._chunks = _run_chunks(self.R, self.M * self.d, self._compiled.threads() if self._affine else 1)
        if self.form == "dense":
            self._shared_A = self.A.shape[0] == 1
            self._AT = np.ascontiguousarray(np.swapaxes(self.A[0], -1, -2)) if self._shared_A else None
        if self.form == "eigenbasis":
            self._y = self._empty()
        # the generated local-scaling kernel pays a compilation per rule and process: only for
        # runs with enough work (steps × coordinates) to win it back
        self._local_work = S.steps * S.R * S.M * S.d
        self._local = None  # (kernel, small parameter names, constants) once adopted
        self._global = None  # (program, kernel, constants) once adopted
        # a rule over runs with both statistics: which runs take the given probe (else g ⊙ g)
        self._per_run = S.rule.statistic is Statistic.PER_RUN
        self._sel = np.asarray(S.probe_runs, dtype=self.dt) if self._per_run else None

    def _empty(self, dtype=None):
        buf = _WORKSPACE.take(self.full, self.dt if dtype is None else dtype)
        self._taken.append(buf)
        return buf

    def release(self):
        """Give the scratch buffers back to the workspace (the run is over), and break the
        reference cycle through the pool, so that the returned iterate's memory is free for
        :meth:`_Workspace.lend` as soon as the caller drops it (not at the next collection)."""
        taken, self._taken = self._taken, []
        _WORKSPACE.give(taken)
        self.pool = None

    def start_from(self, x0_rows, lazy: bool):
        """``x ← 0 + x⁰`` (rows ``(runs, 1, d)``); with ``lazy`` only into ``_xbar_k``, the rows
        written out by :meth:`iterate` when something reads them (see :meth:`sync_and_average`)."""
        if lazy:
            np.add(0.0, x0_rows, out=self._xbar_k)
            self._rows_stale = True
        else:
            np.add(0.0, x0_rows, out=self.x)

    def iterate(self):
        """``x`` with every row written: a lazy average (:meth:`sync_and_average`) is written out
        now, for whatever reads ``x`` next."""
        if self._rows_stale:
            if self._compiled is not None:
                self._launch(self._compiled.fill_rows, self.x, self._xbar_k)
            else:
                np.copyto(self.x, self._xbar_k)
            self._rows_stale = False
        return self.x

    # randomness: the oracle's draw, into a reused buffer (same numbers, same order) -------
    def draw_noise(self, rng):
        if not self.noise:
            return None
        host = self._xi if self._xi64 is None else self._xi64
        rng.standard_normal(out=host)
        host *= np.sqrt(self.noise / self.d)
        if self._xi64 is not None:
            self._xi[...] = host
        return self._xi

    # gradients -------------------------------------------------------------------------------
    def grad(self, xi, out):
        """``out ← A_m x_m − b_m (+ ξ)`` for every run and client."""
        x = self.iterate()
        if self.form == "diagonal":
            np.multiply(self.A, x, out=out)
        elif self.form == "dense":
            if self._shared_A:  # one GEMM per client: A_m read once, not once per run
                for m in range(self.M):
                    np.matmul(x[:, m, :], self._AT[m], out=out[:, m, :])
            else:
                np.matmul(self.A, x[..., None], out=out[..., None])
        else:
            y = self._y
            np.matmul(x.reshape(-1, self.d), self.oracle.Q, out=y.reshape(-1, self.d))
            np.multiply(y, self.A, out=y)
            np.matmul(y.reshape(-1, self.d), self.oracle.QT, out=out.reshape(-1, self.d))
        np.subtract(out, self.b, out=out)
        if xi is not None:
            np.add(out, xi, out=out)
        return out

    def _scaled_step(self, g, D):
        """``x ← x − (γ g) / D̂`` in the engine's order; ``g`` is overwritten."""
        np.multiply(self.gamma, g, out=g)
        np.divide(g, D, out=g)
        np.subtract(self.x, g, out=self.x)

    # global scaling ----------------------------------------------------------------------------
    def scaling_changed(self, D):
        """``D̂`` changed: rebuild the affine map ``x ← P ⊙ x + q`` (diagonal quadratics)."""
        self._D = D
        if not self._affine:
            return
        if self._kernels is not None:  # the kernels form P and q on the fly from c = γ/D̂
            with np.errstate(over="ignore"):  # γ/D̂ may overflow: that run diverges in its first step
                c = np.divide(self.gamma, D)  # (runs, 1, d); (runs, M, d) for a static local D̂
            self._c = np.ascontiguousarray(np.broadcast_to(c, (self.R, c.shape[1], self.d)))
            return
        if self._P is None:
            self._P, self._q = self._empty(), self._empty()
        self._c = np.divide(self.gamma, D)
        np.multiply(self._c, self.A, out=self._P)
        np.subtract(1.0, self._P, out=self._P)
        np.multiply(self._c, self.b, out=self._q)

    def plain_step(self, xi, D):
        """A step with ``D̂`` fixed and no statistic needed."""
        self.iterate()
        if self._kernels is not None:
            if xi is None:
                self._launch(self._kernels.affine_steps, self.x, self.A, self.b, self._c, 1, self._one)
            else:
                self._launch(self._kernels.noisy_step, self.x, self.A, self.b, self._c, xi, self._one)
            return
        if self._affine:
            np.multiply(self.x, self._P, out=self.x)
            np.add(self.x, self._q, out=self.x)
            if xi is not None:
                np.multiply(xi, self._c, out=xi)
                np.subtract(self.x, xi, out=self.x)
            return
        self._scaled_step(self.grad(xi, self._g), D)

    def _launch(self, kernel, *args):
        """``kernel(*args)``, the runs split over threads (the kernels release the GIL).

        Runs are independent, so every array argument with a leading run axis is sliced and
        each thread computes its own runs: the same numbers whatever the split. This thread
        takes the first block; a worker starts later (it is woken, then waits for the GIL), so
        the split is balanced per kernel and run count from when each thread finished
        (:func:`_rebalance`), carried over from one call to the next.
        """
        if len(self._chunks) == 1:
            kernel(*args)
            return
        R = self.R
        key = (kernel, tuple(self._chunks), self.dt)
        chunks = _BALANCED.get(key, self._chunks)
        split = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == R]
        parts = []
        for lo, hi in chunks:  # sliced here, so that a worker needs the GIL only to call
            part = list(args)
            for i in split:
                part[i] = args[i][lo:hi]
            parts.append(part)
        futures = [_thread_pool().submit(_timed_call, kernel, part) for part in parts[1:]]
        start = time.perf_counter()
        kernel(*parts[0])
        own_end = time.perf_counter()
        last_end = max(f.result() for f in futures)
        if len(_BALANCED) > 256:  # generated kernels come and go: forget the old splits
            _BALANCED.clear()
        _BALANCED[key] = _rebalance(chunks, own_end - start, own_end, last_end)

    def plain_steps(self, n, D):
        if self._kernels is None:
            return super().plain_steps(n, D)
        self.iterate()
        self._launch(self._kernels.affine_steps, self.x, self.A, self.b, self._c, n, self._one)

    @property
    def folds_steps_into_sync(self):
        return self._kernels is not None

    def sync_and_average(self, xi, D, with_stat, before=0, then_record=False, lazy=False):
        """Returns ``(mean_m s, max mean_m s)`` with ``s = g ⊙ g`` (``(None, None)`` without
        ``with_stat``), or ``None`` without compiled kernels (separate operations then).
        With ``then_record`` the kernel also leaves ``x̄`` and the consensus error of the
        averaged ``x`` for the next :meth:`record_values` (the same numbers as its own pass).
        With ``lazy`` the averaged rows stay in ``_xbar_k`` only: a following sync starts its
        clients from there without touching ``x``, and :meth:`iterate` writes them out."""
        if self._kernels is None:
            return None
        if not hasattr(self, "_sbar"):  # the kernel forms the statistic's client mean anyway
            self._sbar = np.empty((self.R, 1, self.d), dtype=self.dt)
        self._launch(self._kernels.sync_step, self.x, self.A, self.b, self._c, self.x if xi is None else xi,
                     xi is not None, before, self._rows_stale, not lazy, self._count, self._xbar_k, self._sbar,
                     self._smax, then_record, self._xbar, self._consensus)
        self._rows_stale = lazy
        self._spread_ready = then_record
        # copies: the next sync writes these buffers again, and a rule may keep s in its state
        return (self._sbar.copy(), self._smax.copy()) if with_stat else (None, None)

    def adopt_global(self, S: RunSetup, state) -> bool:
        """The generated update kernel (:func:`global_numba_source`) where Numba is installed,
        the rule traces, and the calls of this process with that kernel have had enough syncs
        of every run to win back loading it (about 10 ms from the cache; it saves ~0.1 ms of
        NumPy calls per sync): a short call costs nothing extra, a sweep of them loads it
        once the syncs add up."""
        self._global = None
        if self._compiled is None:
            return False
        program = _global_program(S, state)
        if program is None:
            return False
        source, small, _, consts = global_numba_source(program)
        if source not in _GLOBAL_KERNELS:
            seen = _GLOBAL_SYNCS.get(source, 0) + S.steps // max(1, int(np.max(S.schedule.max_gap)))
            if seen < _GLOBAL_KERNEL_MIN_SYNCS:
                if len(_GLOBAL_SYNCS) > 256:
                    _GLOBAL_SYNCS.clear()
                _GLOBAL_SYNCS[source] = seen
                return False
            if len(_GLOBAL_KERNELS) > 64:
                _GLOBAL_KERNELS.clear()
            _GLOBAL_KERNELS[source] = self._compiled.compile_generated(source, "savic_global_update")
        self._global = (program, _GLOBAL_KERNELS[source], np.array([consts], dtype=self.dt).reshape(1, len(consts)))
        self._gamma_runs = _rows(self.gamma.reshape(self.R), (self.R,), self.dt)
        return True

    def update_global(self, state, D, s_mean, beta, e):
        program, kernel, consts = self._global
        R, d, dt = self.R, self.d, self.dt
        K, small_state, big = _global_inputs(program, state, D, beta, e, np, dt)
        rows = (R, 1, d)
        D_new, c = np.empty(rows, dtype=dt), np.empty(rows, dtype=dt)
        big_new = [np.empty(rows, dtype=dt) for _ in big]
        big = [_rows(b, rows, dt) for b in big]
        hi, lo = np.empty(R, dtype=dt), np.empty(R, dtype=dt)
        args = (_rows(D, rows, dt), *big, _rows(s_mean, rows, dt), self._gamma_runs, K, consts, D_new, *big_new, c,
                hi, lo)
        if R * d >= 2 * _MIN_WORK_PER_THREAD:
            self._launch(kernel, *args)
        else:  # handing half of so little work to a worker thread costs more than it saves
            kernel(*args)
        self._D = D_new
        if self._affine:
            self._c = c
        else:
            self.scaling_changed(D_new)
        return _global_state(program, state, big_new, small_state), D_new, hi, lo

    def initial_grad_squared(self, rng):
        """``g ⊙ g`` at ``x⁰`` with the oracle's first draw (the statistic of ``D̂⁰``)."""
        g = self.grad(self.draw_noise(rng), self._g)
        return np.multiply(g, g, out=self._s_buffer())

    @property
    def has_mean_grad_squared(self) -> bool:
        """Whether :meth:`initial_mean_grad_squared` has a compiled kernel (diagonal problems)."""
        return self._kernels is not None

    def initial_mean_grad_squared(self, rng):
        """Global scaling's ``(mean_m g ⊙ g, max mean_m g ⊙ g)`` at ``x⁰`` with the oracle's first draw,
        by one kernel pass (no full-size ``g ⊙ g``); the numbers of :meth:`initial_grad_squared`
        followed by the engine's max and client mean."""
        xi = self.draw_noise(rng)
        sbar = np.empty((self.R, 1, self.d), dtype=self.dt)
        self._launch(self._kernels.mean_grad_squared, self.x, self.A, self.b, self.x if xi is None else xi,
                     xi is not None, self._rows_stale, self._xbar_k, self._count, sbar, self._smax, True,
                     self._xbar, self._consensus)
        self._spread_ready = True  # for the record of step 0, which follows with x unchanged
        return sbar, self._smax.copy()

    def sync_step(self, xi, D, statistic):
        """A step that also returns the statistic ``s`` at the pre-step iterate (``g ⊙ g``, or
        ``statistic(g)`` of the step's gradient ``g`` when given)."""
        g = self.grad(xi, self._g)
        if statistic is not None:
            s = statistic(g)
        if self._affine:  # x ← P ⊙ x + q − (γ/D̂) ξ; g stays intact for s = g ⊙ g
            self.plain_step(xi, D)
        if statistic is None:
            s = np.multiply(g, g, out=self._s_buffer() if not self._affine else g)
        if not self._affine:
            self._scaled_step(g, D)
        return s

    def _s_buffer(self):
        if not hasattr(self, "_s"):
            self._s = self._empty()
        return self._s

    # local scaling ------------------------------------------------------------------------------
    def adopt_local(self, program: RuleProgram, state: list, D):
        """Copy the initial big state and ``D̂`` into pool buffers (they are recycled per step)."""
        out = []
        for comp, node in zip(state, program.state_in):
            if node.big:
                buf = self.pool.take()
                buf[...] = comp
                out.append(buf)
            else:
                out.append(comp)
        Dbuf = self.pool.take()
        Dbuf[...] = D
        self._big_names = frozenset(n.name for n in program.state_in if n.big)
        if self._compiled is not None and self._local_work >= _LOCAL_KERNEL_MIN_WORK:
            given_s = "per_run" if self._per_run else program.rule.statistic is not Statistic.GRAD_SQUARED
            source, small, _, consts = local_numba_source(program, self._affine, bool(self.noise), given_s)
            kernel = self._compiled.compile_generated(source, "savic_local_steps")
            self._local = (kernel, small, np.array([consts], dtype=self.dt).reshape(1, len(consts)))
        return out, Dbuf

    @property
    def folds_local_steps(self) -> bool:
        """Whether :meth:`local_steps` takes several noise-free steps in one pass."""
        return self._local is not None and self._affine and not self.noise

    def local_steps(self, xi, D, state, s_given, program: RuleProgram, betas, e):
        """With the generated kernel, in place (else the ufunc replay of :meth:`local_step`)."""
        if self._local is None:
            return super().local_steps(xi, D, state, s_given, program, betas, e)
        kernel, small, consts = self._local
        R, n = self.R, len(betas)
        self.iterate()
        K = np.empty((R, n, len(small)), dtype=self.dt)
        small_state = [c for c, node in zip(state, program.state_in) if not node.big]
        for t, beta in enumerate(betas):  # the per-run values, step by step (on the host)
            env = {"beta": beta, "e": e}
            it = iter(small_state)
            env.update({node.name: next(it) for node in program.state_in if not node.big})
            params, small_state = program.small_values(env, np)
            for i, name in enumerate(small):
                K[:, t, i] = np.broadcast_to(params[name], (R, 1, 1)).reshape(R)
        big = [c for c, node in zip(state, program.state_in) if node.big]
        if self._affine:
            g = self.x
        else:
            g = self.grad(xi, self._g)
        hi, lo, smax = (np.empty(R, dtype=self.dt) for _ in range(3))
        self._launch(kernel, self.x, D, *big, self.A, self.b, self.x if xi is None else xi, g,
                     self.x if s_given is None else s_given, self._sel if self._per_run else self.gamma.reshape(R),
                     self.gamma.reshape(R), K, consts, hi, lo, smax)
        it = iter(small_state)
        new_state = [c if node.big else next(it) for c, node in zip(state, program.state_in)]
        return new_state, D, hi, lo, smax

    def local_step(self, xi, D, state, s_given, program: RuleProgram, beta, e):
        g = self.grad(xi, self._g)
        if s_given is None:
            s = np.multiply(g, g, out=self._s_buffer())
            s_max = np.max(s, axis=(1, 2))
        else:
            s = s_given
            if self._per_run:  # the probe runs' probes, the others' g ⊙ g
                s = np.where(self._sel[:, None, None] != 0, s_given, g * g)
            s_max = np.max(np.abs(s), axis=(1, 2))
        self._scaled_step(g, D)
        env = {"s": s, "beta": beta, "e": e}
        env.update({f"st{i}": c for i, c in enumerate(state)})
        outs = program.run(env, np, self.pool, self._big_names)
        D_new = outs[-1]
        ratio = np.divide(D_new, D, out=self._g)
        hi, lo = np.max(ratio, axis=(1, 2)), np.min(ratio, axis=(1, 2))
        self.pool.give(D)
        return outs[:-1], D_new, hi, lo, s_max

    # communication and recording ------------------------------------------------------------------
    def client_mean(self, a):
        """``mean over clients`` with ``keepdims`` (the engine's reduction, same order)."""
        return np.mean(a, axis=1, keepdims=True)

    def average(self, sync):
        """``x_m ← x̄`` for every run (``sync`` None) or for the runs flagged in ``sync``."""
        self.iterate()
        xbar = np.mean(self.x, axis=1, keepdims=True, out=self._xbar_k)
        if sync is None:
            self.x[...] = xbar
        else:
            np.copyto(self.x, xbar, where=sync[:, None, None])

    def record_values(self, x, D, stat_max, x_star, f_star, G_hat):
        if self._compiled is not None:  # x̄ and the consensus error in one pass over x
            if not self._spread_ready:  # (or already left by the sync step just before)
                x = self.iterate()
                self._launch(self._compiled.client_spread, x, self._count, self._xbar, self._consensus)
            self._spread_ready = False
            xbar, consensus = self._xbar, self._consensus
        else:
            x = self.iterate()
            xbar = np.mean(x, axis=1, out=self._xbar)
            dev = np.subtract(x, xbar[:, None, :], out=self._g)
            np.multiply(dev, dev, out=dev)
            consensus = np.mean(np.sum(dev, axis=-1), axis=-1)
        diff = xbar - x_star
        # the engine's numbers: a global D̂'s client mean is D̂ itself (a mean of one is exact)
        D_mean = D[:, 0] if D.shape[1] == 1 else np.mean(D, axis=1)
        vals = np.empty((len(HISTORY_KEYS), self.R))  # in the order of HISTORY_KEYS
        vals[0] = np.sum(diff * diff, axis=-1)
        vals[1] = self.oracle.loss(xbar) - f_star
        vals[2] = consensus
        vals[3] = np.min(D, axis=(1, 2))
        vals[4] = np.max(D, axis=(1, 2))
        vals[5] = G_hat(stat_max)
        vals[6] = np.sum(D_mean * diff * diff, axis=-1)
        return vals, xbar


# =========================================================================================
# GPU: CuPy kernels (CuPy is imported only here, when a run is on the GPU)
# =========================================================================================
_BLOCK = 256

_MEAN_SRC = r"""
extern "C" __global__ void savic_client_mean(TYPE* x, TYPE* xbar, const bool* sync,
                                             long long R, long long M, long long d,
                                             int write_back) {
    // One thread per (run, coordinate): it walks the client axis with stride d, so that
    // neighbouring threads read neighbouring addresses (coalesced) and the sum streams.
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= R * d) return;
    long long r = k / d;
    long long j = k - r * d;
    TYPE* p = x + r * M * d + j;
    TYPE acc = p[0];
    for (long long m = 1; m < M; ++m) acc += p[m * d];
    TYPE mean = acc / (TYPE)M;
    xbar[k] = mean;
    if (write_back && sync[r]) {
        for (long long m = 0; m < M; ++m) p[m * d] = mean;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cuda_mean_kernel(ctype: str):
    import cupy as cp

    return cp.RawKernel(_MEAN_SRC.replace("TYPE", ctype), "savic_client_mean")


@functools.lru_cache(maxsize=None)
def _cuda_elementwise(in_params: str, out_params: str, body: str, name: str):
    import cupy as cp

    return cp.ElementwiseKernel(in_params, out_params, body, name, preamble=_CUDA_PREAMBLE)


def _grad_expr(inline_grad: bool, noisy: bool) -> tuple[str, str]:
    """Kernel inputs and the expression of the stochastic gradient ``gr`` (engine order)."""
    if inline_grad:
        return ("T a, T b, T xi, " if noisy else "T a, T b, "), (
            "a * x_old - b + xi" if noisy else "a * x_old - b")
    return "T g, ", "g"


def step_kernel_source(inline_grad: bool, noisy: bool, with_stat: bool) -> tuple[str, str, str]:
    """``(in_params, out_params, body)`` of the global-scaling step kernel.

    Per element ``x ← x − (γ gr)/D̂`` with ``gr = a x − b (+ ξ)`` computed inline (diagonal
    quadratics) or read from ``g``; ``with_stat`` also writes ``s = gr ⊙ gr``.
    """
    grad_in, grad = _grad_expr(inline_grad, noisy)
    body = ["const T x_old = x;", f"const T gr = {grad};"]
    if with_stat:
        body.append("s = gr * gr;")
    body.append("x = x_old - (gamma * gr) / D;")
    return grad_in + "T gamma, T D", ("T x, T s" if with_stat else "T x"), "\n".join(body)


def local_kernel_source(program: RuleProgram, inline_grad: bool, noisy: bool, given_s: bool):
    """Parameters and body of the generated local-scaling kernel (one launch per local step).

    Per element: the gradient ``gr`` (inline for diagonal quadratics), the statistic ``s_``
    (``gr·gr``, a given probe, or with ``given_s="per_run"`` the given probe where the per-run
    selector ``sel`` is nonzero and ``gr·gr`` elsewhere), ``x ← x − (γ gr)/D̂_old``, the traced
    rule update of the state, ``D̂_new``, the ratio ``D̂_new/D̂_old`` and ``|s_|`` (for the
    per-run maxima).

    Returns ``(in_params, out_params, body, small_names)``.
    """
    rule_body, small, state_params = program.cuda_body()
    grad_in, grad = _grad_expr(inline_grad, noisy)
    given = ("T s_in, T sel, " if given_s == "per_run" else "T s_in, ") if given_s else ""
    ins = grad_in + given + "T gamma" + "".join(f", T {k}" for k in small)
    outs = "T x, T D" + "".join(f", T {p}" for p in state_params) + ", T ratio, T sabs"
    pre = ["const T x_old = x;", "const T D_old = D;"]
    pre += [f"const T {p}_old = {p};" for p in state_params]
    pre.append(f"const T gr = {grad};")
    pre.append("const T s_ = ((sel) != T(0) ? (s_in) : (gr * gr));" if given_s == "per_run"
               else "const T s_ = s_in;" if given_s else "const T s_ = gr * gr;")
    post = ["x = x_old - (gamma * gr) / D_old;", "D = D_new;", "ratio = D_new / D_old;",
            "sabs = fabs(s_);"]
    return ins, outs, "\n".join(pre + [rule_body] + post), small


def global_kernel_source(program: RuleProgram):
    """Parameters and body of the generated GPU kernel for global scaling's update at a sync.

    Per element of ``(runs, 1, d)``: the traced update of the state from the clients' mean
    statistic ``s``, ``D̂ = clip(diagonal(state))`` and the ratio ``D̂/D̂_prev`` (whose per-run
    maximum and minimum are the drift). One launch where the rule's code takes one per
    operation.

    Returns ``(in_params, out_params, body, small_names)``.
    """
    rule_body, small, state_params = program.cuda_body()
    ins = "T D_prev, " + "".join(f"T {p}_prev, " for p in state_params) + "T s" + "".join(f", T {k}" for k in small)
    outs = "T D" + "".join(f", T {p}" for p in state_params) + ", T ratio"
    pre = ["const T D_old = D_prev;"] + [f"const T {p}_old = {p}_prev;" for p in state_params]
    pre.append("const T s_ = s;")
    post = ["D = D_new;", "ratio = D_new / D_old;"]
    return ins, outs, "\n".join(pre + [rule_body] + post), small


def local_numba_source(program: RuleProgram, inline_grad: bool, noisy: bool, given_s: bool):
    """Python source of the generated CPU kernel for local-scaling steps (compiled by Numba).

    ``savic_local_steps(x, D, <big state…>, a, b, xi, g, s_in, sel, gamma, K, C, hi, lo, smax)``
    takes ``n = K.shape[1]`` local steps in place, one client row at a time (the row, its
    ``D̂`` and its state stay in cache for all ``n`` steps), each as the NumPy path takes it:
    ``gr = a ⊙ x − b (+ ξ)`` (or ``gr = g``), ``s = gr ⊙ gr`` (or ``s_in``; with
    ``given_s="per_run"``, ``s_in`` in the runs whose ``sel`` is nonzero), ``x ← x − (γ gr)/D̂``,
    the traced update, ``D̂_new``. ``K`` (runs, n, ·) holds the small parameters of each step,
    ``C`` (1, ·) the constants in the run's dtype; ``hi, lo`` (runs,) receive the largest and
    smallest ``D̂_new/D̂_old`` over the steps and ``smax`` the largest ``|s|``, NaN when any
    value is NaN (as ``np.max``). Several steps need ``inline_grad`` without noise or ``s_in``.

    Returns ``(source, small parameter names, big state names, constants)``.
    """
    # a rule over runs selects each run's kind with where on per-run masks: the row loop gets one
    # specialised body per setting of those selectors (a run computes only its own kind)
    # (the masks are one-hot, the last kind's all false: one body per kind, not one per subset of
    # kinds, whose number doubles with each kind; any other setting takes the unspecialised body)
    selectors = program.selectors()
    settings = [{k: k == on for k in selectors} for on in selectors] + [dict.fromkeys(selectors, False)]
    if len(selectors) > 1:
        settings.append({})  # the else branch: every where evaluated per element
    bodies, small, state_params, consts = program.numba_bodies(settings)
    args = ["x", "D"] + state_params + ["a", "b", "xi", "g", "s_in", "sel", "gamma", "K", "C", "hi", "lo", "smax"]
    src = [f"def savic_local_steps({', '.join(args)}):",
           "    R, M, d = x.shape",
           "    n = K.shape[1]",
           "    many = a.shape[0] > 1"]
    src += [f"    c{i} = C[0, {i}]" for i in range(len(consts))]
    src += ["    qr = np.empty(d, dtype=x.dtype)",
            "    sq = np.empty(d, dtype=x.dtype)",
            "    for r in range(R):",
            "        ra = r if many else 0",
            "        gam = gamma[r]",
            "        probe_run = sel[r] != 0",
            "        h = -np.inf",
            "        lw = np.inf",
            "        top = 0.0",
            "        bad_ratio = False",
            "        bad_s = False",
            "        for m in range(M):",
            "            xr = x[r, m]",
            "            Dr = D[r, m]"]
    src += [f"            {p}r = {p}[r, m]" for p in state_params]
    if inline_grad:
        src += ["            ar = a[ra, m]", "            br = b[ra, m]"]
        if noisy:
            src.append("            xir = xi[r, m]")
    else:
        src.append("            gr_row = g[r, m]")
    if given_s:
        src.append("            sr = s_in[r, m]")
    src.append("            for t in range(n):")
    src += [f"                {k} = K[r, t, {i}]" for i, k in enumerate(small)]
    body = ["x_old = xr[j]", "D_old = Dr[j]"] + [f"{p}_old = {p}r[j]" for p in state_params]
    if inline_grad:
        body.append("gr = ar[j] * x_old - br[j]")
        if noisy:
            body.append("gr = gr + xir[j]")
    else:
        body.append("gr = gr_row[j]")
    body.append("s_ = sr[j] if probe_run else gr * gr" if given_s == "per_run"
                else "s_ = sr[j]" if given_s else "s_ = gr * gr")
    body.append("xr[j] = x_old - (gam * gr) / D_old")
    tail = ["Dr[j] = D_new"] + [f"{p}r[j] = {p}_new" for p in state_params]
    tail += ["qr[j] = D_new / D_old", "sq[j] = abs(s_)"]
    for i, (fixed, lines) in enumerate(zip(settings, bodies)):
        indent = "                "
        if selectors:  # the last setting is the else branch
            if i < len(settings) - 1:
                test = " and ".join(f"{k} != 0" if fixed[k] else f"{k} == 0" for k in selectors)
                src.append(f"{indent}{'if' if i == 0 else 'elif'} {test}:")
            else:
                src.append(f"{indent}else:")
            indent += "    "
        src.append(f"{indent}for j in range(d):")  # elementwise only: it vectorises
        src += [f"{indent}    " + line for line in body + lines + tail]
    src += ["                for j in range(d):",  # the reductions, NaN-aware, on the cached row
            "                    q = qr[j]",
            "                    sa = sq[j]",
            "                    h = q if q > h else h",
            "                    lw = q if q < lw else lw",
            "                    top = sa if sa > top else top",
            "                    bad_ratio |= q != q",
            "                    bad_s |= sa != sa"]
    src += ["        hi[r] = np.nan if bad_ratio else h",
            "        lo[r] = np.nan if bad_ratio else lw",
            "        smax[r] = np.nan if bad_s else top"]
    return "\n".join(src) + "\n", small, state_params, consts


def global_numba_source(program: RuleProgram):
    """Python source of the generated CPU kernel for global scaling's update at a sync.

    ``savic_global_update(D, <big state…>, s, gamma, K, C, D_new, <new big state…>, c, hi, lo)``
    per run and coordinate (all big arrays ``(runs, 1, d)``): the traced update of the state
    from the clients' mean statistic ``s``, ``D̂_new = clip(diagonal(state))``, ``c = γ/D̂_new``
    (what the affine steps read) and the ratio ``D̂_new/D̂``; ``hi, lo`` (runs,) receive its
    largest and smallest value, NaN when any is NaN (as ``np.max``). ``K`` (runs, ·) holds the
    small parameters, ``C`` (1, ·) the constants in the run's dtype. The same operations in the
    same order as :func:`~savic_theory.simulator.engine.update_scaling` followed by
    ``_CPUOps.scaling_changed``, so the same numbers.

    Returns ``(source, small parameter names, big state names, constants)``.
    """
    (lines,), small, state_params, consts = program.numba_bodies([None])
    new = [f"{p}_out" for p in state_params]
    args = ["D"] + state_params + ["s", "gamma", "K", "C", "D_out"] + new + ["c", "hi", "lo"]
    src = [f"def savic_global_update({', '.join(args)}):",
           "    R, d = D.shape[0], D.shape[2]"]
    src += [f"    c{i} = C[0, {i}]" for i in range(len(consts))]
    src += ["    qr = np.empty(d, dtype=D.dtype)",
            "    for r in range(R):"]
    src += [f"        {k} = K[r, {i}]" for i, k in enumerate(small)]
    src += ["        gam = gamma[r]",
            "        Dr = D[r, 0]",
            "        sr = s[r, 0]",
            "        Do = D_out[r, 0]",
            "        cr = c[r, 0]"]
    src += [f"        {p}r = {p}[r, 0]" for p in state_params]
    src += [f"        {p}o = {p}_out[r, 0]" for p in state_params]
    body = ["D_old = Dr[j]", "s_ = sr[j]"] + [f"{p}_old = {p}r[j]" for p in state_params]
    body += lines
    body += ["Do[j] = D_new"] + [f"{p}o[j] = {p}_new" for p in state_params]
    body += ["cr[j] = gam / D_new", "qr[j] = D_new / D_old"]
    src.append("        for j in range(d):")  # elementwise only: it vectorises
    src += ["            " + line for line in body]
    src += ["        h = -np.inf",
            "        lw = np.inf",
            "        bad = False",
            "        for j in range(d):",  # the reductions, NaN-aware, on the cached row
            "            q = qr[j]",
            "            h = q if q > h else h",
            "            lw = q if q < lw else lw",
            "            bad |= q != q",
            "        hi[r] = np.nan if bad else h",
            "        lo[r] = np.nan if bad else lw"]
    return "\n".join(src) + "\n", small, state_params, consts


class _GPUOps(_Ops):
    """The array work of one fused run on a CUDA device through CuPy kernels."""

    def __init__(self, S: RunSetup, gamma_x, x):
        import cupy as cp

        self.cp = cp
        self.R, self.M, self.d, self.dt = S.R, S.M, S.d, S.dt
        self.full = (S.R, S.M, S.d)
        self.ctype = "double" if np.dtype(self.dt) == np.float64 else "float"
        self.oracle = S.oracle
        self.form = S.problem.form
        self.noise = S.problem.noise
        self.gamma = gamma_x
        self.x = cp.ascontiguousarray(x)
        self.A, self.b = self.oracle.A, self.oracle.b
        self._xi = cp.empty(self.full, dtype=self.dt) if self.noise else None
        # a rule over runs with both statistics: which runs take the given probe (else g ⊙ g)
        self._sel = (cp.asarray(S.probe_runs, dtype=self.dt).reshape(S.R, 1, 1)
                     if S.rule.statistic is Statistic.PER_RUN else None)
        self._xi_host = np.empty(self.full) if self.noise else None
        self._xi_cast = (np.empty(self.full, dtype=np.dtype(self.dt))
                         if self.noise and np.dtype(self.dt) != np.float64 else None)
        self._all = cp.ones((S.R,), dtype=cp.bool_)
        self._kernel = None
        inline, noisy = self.form == "diagonal", bool(self.noise)
        self._k_step = _cuda_elementwise(*step_kernel_source(inline, noisy, False), "savic_step")
        self._k_step_stat = _cuda_elementwise(*step_kernel_source(inline, noisy, True), "savic_step_stat")
        self._k_step_given = _cuda_elementwise(*step_kernel_source(False, False, False), "savic_step_given")

    def release(self):
        """Nothing to do: CuPy's memory pool keeps device buffers for the next call."""

    # randomness ---------------------------------------------------------------------------------
    def draw_noise(self, rng):
        if not self.noise:
            return None
        rng.standard_normal(out=self._xi_host)
        self._xi_host *= np.sqrt(self.noise / self.d)
        host = self._xi_host
        if self._xi_cast is not None:
            self._xi_cast[...] = host
            host = self._xi_cast
        self._xi.set(host)
        return self._xi

    def _grad_inputs(self, xi):
        return (self.A, self.b, xi) if xi is not None else (self.A, self.b)

    def grad(self, xi):
        """``A_m x_m − b_m (+ ξ)`` as a new array (dense and eigenbasis: matrix products)."""
        cp, x = self.cp, self.x
        if self.form == "diagonal":
            g = self.A * x - self.b
        elif self.form == "dense":
            if self.A.shape[0] == 1:  # (M, R, d) @ (M, d, d): A_m read once per step
                g = cp.matmul(x.transpose(1, 0, 2), self.A[0].transpose(0, 2, 1)).transpose(1, 0, 2)
            else:
                g = cp.matmul(self.A, x[..., None])[..., 0]
            g = g - self.b
        else:
            y = cp.matmul(x.reshape(-1, self.d), self.oracle.Q).reshape(self.full) * self.A
            g = cp.matmul(y.reshape(-1, self.d), self.oracle.QT).reshape(self.full) - self.b
        return g if xi is None else g + xi

    # global scaling -----------------------------------------------------------------------------------
    def scaling_changed(self, D):
        self._D = D

    def plain_step(self, xi, D):
        if self.form == "diagonal":
            self._k_step(*self._grad_inputs(xi), self.gamma, D, self.x)
        else:
            self._k_step_given(self.grad(xi), self.gamma, D, self.x)

    def sync_step(self, xi, D, statistic):
        if statistic is None and self.form == "diagonal":
            s = self.cp.empty(self.full, dtype=self.dt)
            self._k_step_stat(*self._grad_inputs(xi), self.gamma, D, self.x, s)
            return s
        g = self.grad(xi)
        s = g * g if statistic is None else statistic(g)
        self._k_step_given(g, self.gamma, D, self.x)
        return s

    def adopt_global(self, S: RunSetup, state) -> bool:
        """The generated update kernel (:func:`global_kernel_source`) wherever the rule traces."""
        program = _global_program(S, state)
        if program is None:
            return False
        ins, outs, body, small = global_kernel_source(program)
        self._global = (program, _cuda_elementwise(ins, outs, body, "savic_global_update"), small)
        return True

    def update_global(self, state, D, s_mean, beta, e):
        cp = self.cp
        program, kernel, small_names = self._global
        env = {"beta": beta, "e": e}
        env.update({node.name: c for c, node in zip(state, program.state_in)})
        params, small_state = program.small_values(env, cp)
        rows = (self.R, 1, self.d)
        big = [c for c, node in zip(state, program.state_in) if node.big]
        D_new, ratio = cp.empty(rows, dtype=self.dt), cp.empty(rows, dtype=self.dt)
        big_new = [cp.empty(rows, dtype=self.dt) for _ in big]
        kernel(D, *big, s_mean, *(cp.asarray(params[k], dtype=self.dt) for k in small_names), D_new, *big_new, ratio)
        self._D = D_new
        hi, lo = to_numpy(cp.max(ratio, axis=(1, 2))), to_numpy(cp.min(ratio, axis=(1, 2)))
        return _global_state(program, state, big_new, small_state), D_new, hi, lo

    # local scaling ---------------------------------------------------------------------------------------
    def adopt_local(self, program: RuleProgram, state: list, D):
        cp = self.cp
        self._program = program
        out = [cp.ascontiguousarray(cp.broadcast_to(c, self.full)).copy() if n.big else c
               for c, n in zip(state, program.state_in)]
        return out, cp.ascontiguousarray(cp.broadcast_to(D, self.full)).copy()

    def _local_kernel(self, given_s: bool):
        key = given_s
        if self._kernel is None or self._kernel[0] != key:
            ins, outs, body, small = local_kernel_source(
                self._program, self.form == "diagonal", bool(self.noise), given_s)
            self._kernel = (key, _cuda_elementwise(ins, outs, body, "savic_local_step"), small)
        return self._kernel[1], self._kernel[2]

    def local_step(self, xi, D, state, s_given, program: RuleProgram, beta, e):
        cp = self.cp
        per_run = self._sel is not None
        kern, small_names = self._local_kernel(("per_run" if per_run else True) if s_given is not None else False)
        env = {"beta": beta, "e": e}
        env.update({f"st{i}": c for i, c in enumerate(state)})
        params, small_state = program.small_values(env, cp)
        args = list(self._grad_inputs(xi)) if self.form == "diagonal" else [self.grad(xi)]
        if s_given is not None:
            args += [s_given, self._sel] if per_run else [s_given]
        args.append(self.gamma)
        # one dtype for the placeholder T: a rule over runs hands its per-run masks as booleans
        args += [cp.asarray(params[k], dtype=self.dt) for k in small_names]
        big = [c for c, n in zip(state, program.state_in) if n.big]
        ratio = cp.empty(self.full, dtype=self.dt)
        sabs = cp.empty(self.full, dtype=self.dt)
        kern(*args, self.x, D, *big, ratio, sabs)
        it = iter(small_state)
        new_state = [c if n.big else next(it) for c, n in zip(state, program.state_in)]
        return (new_state, D, cp.max(ratio, axis=(1, 2)), cp.min(ratio, axis=(1, 2)),
                cp.max(sabs, axis=(1, 2)))

    # communication and recording ----------------------------------------------------------------------------
    def _mean(self, a, write_back=False, sync=None):
        cp = self.cp
        if a.shape != self.full:  # e.g. the exact OASIS statistic, shared over runs
            a = cp.broadcast_to(a, self.full)
        a = cp.ascontiguousarray(a)  # x itself when averaging (written back in place)
        out = cp.empty((self.R, 1, self.d), dtype=self.dt)
        n = self.R * self.d
        flags = self._all if sync is None else cp.asarray(sync)
        _cuda_mean_kernel(self.ctype)(((n + _BLOCK - 1) // _BLOCK,), (_BLOCK,),
                                      (a, out, flags, np.int64(self.R), np.int64(self.M),
                                       np.int64(self.d), np.int32(1 if write_back else 0)))
        return out

    def client_mean(self, a):
        return self._mean(a)

    def average(self, sync):
        self._mean(self.x, write_back=True, sync=sync)

    def record_values(self, x, D, stat_max, x_star, f_star, G_hat):
        cp = self.cp
        xbar = self._mean(x)[:, 0, :]
        diff = xbar - x_star
        dev = x - xbar[:, None, :]
        vals = cp.stack([
            cp.sum(diff * diff, axis=-1),
            self.oracle.loss(xbar) - f_star,
            cp.mean(cp.sum(dev * dev, axis=-1), axis=-1),
            cp.min(D, axis=(1, 2)),
            cp.max(D, axis=(1, 2)),
            G_hat(stat_max),
            cp.sum(cp.mean(D, axis=1) * diff * diff, axis=-1),
        ])
        return np.array(vals.get(), dtype=np.float64), xbar
