"""The GPU path's CUDA sources built by real compilers, on a machine without a GPU.

The fused GPU path (:mod:`savic_theory.simulator.fused`) generates CUDA C: elementwise kernel
bodies for ``cupy.ElementwiseKernel`` and the client-average ``cupy.RawKernel``. Without a
device, CuPy cannot compile them, so this module builds the same text two other ways:

* **device build** (:func:`nvcc_check`): ``nvcc`` compiles a translation unit that wraps each
  body as CuPy does (``const T &in = …; T &out = …;`` per element, the preamble at file scope,
  ``typedef … T``) into a cubin for a given architecture, warnings as errors; ``ptxas`` reports
  each kernel's registers and spills. This checks that NVIDIA's compiler accepts the text.
* **host build** (:func:`host_library`): ``g++`` compiles the same wrapper as C++ (CUDA's
  qualifiers defined away, ``blockIdx``/``threadIdx`` as globals) into a shared library that runs
  each kernel on NumPy buffers through ``ctypes``, thread after thread. This gives the C
  semantics of the text (types of literals, precedence, integer index arithmetic, the preamble's
  templates) rather than a Python reading of it. FMA contraction is off, so a build performs the
  body's operations exactly as written (the device contracts them, a few ulps apart).

:class:`HostElementwiseKernel` and :class:`HostRawKernel` stand in for CuPy's classes, with
CuPy's argument rules (one dtype per type placeholder, outputs of the broadcast shape).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CTYPES = {np.dtype(np.float64): "double", np.dtype(np.float32): "float"}

_HOST_PRELUDE = r"""
#include <cmath>
struct savic_dim3 { unsigned int x, y, z; };
static savic_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
using std::sqrt; using std::fabs; using std::exp; using std::log;
"""

HOST_FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-Wall", "-Werror")


def have_nvcc() -> bool:
    return shutil.which("nvcc") is not None


def have_cxx() -> bool:
    return shutil.which("g++") is not None


def parse_params(params: str) -> list[tuple[str, str]]:
    """``"T a, T b"`` → ``[("T", "a"), ("T", "b")]`` (CuPy's parameter syntax, no ``raw``)."""
    out = []
    for p in params.split(","):
        words = p.split()
        if len(words) != 2:
            raise ValueError(f"unsupported kernel parameter {p!r}")
        out.append((words[0], words[1]))
    return out


def elementwise_function(ins: str, outs: str, body: str, name: str) -> str:
    """A ``__global__`` function that runs ``body`` per element as CuPy's wrapper does.

    Arrays arrive as flat pointers of the broadcast size ``_n`` (the caller broadcasts); a
    grid-stride loop covers them. Inputs are bound as ``const T &``, outputs as ``T &``.
    """
    in_p, out_p = parse_params(ins), parse_params(outs)
    args = [f"const {t}* __restrict__ _raw_{n}" for t, n in in_p] + [f"{t}* _raw_{n}" for t, n in out_p]
    binds = [f"const {t} &{n} = _raw_{n}[i];" for t, n in in_p] + [f"{t} &{n} = _raw_{n}[i];" for t, n in out_p]
    return "\n".join([
        f'extern "C" __global__ void {name}({", ".join(args)}, long long _n) {{',
        "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < _n;",
        "       i += (long long)blockDim.x * gridDim.x) {",
        *("    " + b for b in binds),
        *("    " + line for line in body.splitlines()),
        "  }",
        "}",
    ])


def _signature(source: str, name: str) -> list[tuple[str, str]]:
    """``(type, name)`` of each parameter of the ``__global__`` function ``name`` in ``source``."""
    m = re.search(r"__global__\s+void\s+" + re.escape(name) + r"\s*\(([^)]*)\)", source)
    if m is None:
        raise ValueError(f"no __global__ function {name} in the source")
    params = []
    for p in m.group(1).split(","):
        p = " ".join(p.split())
        typ, _, pname = p.rpartition(" ")
        if pname.startswith("*"):
            typ, pname = typ + "*", pname[1:]
        params.append((typ, pname))
    return params


def host_launcher(source: str, name: str) -> str:
    """A host function ``launch_<name>(gx, gy, gz, block, params…)`` that runs every thread of
    a (gx, gy, gz) grid of one-dimensional blocks in turn."""
    params = _signature(source, name)
    decl = ", ".join(f"{t} {n}" for t, n in params)
    call = ", ".join(n for _, n in params)
    return "\n".join([
        f'extern "C" void launch_{name}(unsigned int _gx, unsigned int _gy, unsigned int _gz, unsigned int _block, '
        f'{decl}) {{',
        "  gridDim.x = _gx; gridDim.y = _gy; gridDim.z = _gz; blockDim.x = _block; blockDim.y = blockDim.z = 1;",
        "  threadIdx.y = threadIdx.z = 0;",
        "  for (unsigned int _bz = 0; _bz < _gz; ++_bz)",  # underscored: no kernel parameter is hidden
        "    for (unsigned int _by = 0; _by < _gy; ++_by)",
        "      for (unsigned int _bx = 0; _bx < _gx; ++_bx)",
        "        for (unsigned int _t = 0; _t < _block; ++_t) {",
        "          blockIdx.x = _bx; blockIdx.y = _by; blockIdx.z = _bz; threadIdx.x = _t;",
        f"          {name}({call});",
        "        }",
        "}",
    ])


def _cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"savic-cuda-host-{os.getuid()}"
    path.mkdir(exist_ok=True)
    return path


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@functools.lru_cache(maxsize=None)
def host_library(source: str) -> ctypes.CDLL:
    """``source`` compiled by g++ as C++ (after :data:`_HOST_PRELUDE`) and loaded.

    Builds are kept under the temporary directory by a hash of source and flags, written
    atomically, so later test runs load them without compiling.
    """
    text = _HOST_PRELUDE + source
    key = hashlib.sha256((text + " ".join(HOST_FLAGS)).encode()).hexdigest()[:24]
    lib = _cache_dir() / f"{key}.so"
    if not lib.exists():
        src = _cache_dir() / f"{key}.{os.getpid()}.cpp"
        tmp = _cache_dir() / f"{key}.{os.getpid()}.so.tmp"
        src.write_text(text)
        proc = _run(["g++", *HOST_FLAGS, "-o", str(tmp), str(src)])
        src.unlink()
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"g++ rejected the kernel source:\n{proc.stderr}\n--- source ---\n{text}")
        os.replace(tmp, lib)
    return ctypes.CDLL(str(lib))


def nvcc_check(source: str, arch: str = "sm_90") -> str:
    """Compile ``source`` with nvcc to a cubin for ``arch``, warnings as errors; return ptxas's report.

    Raises ``RuntimeError`` with the compiler's messages when nvcc rejects the source.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cu = Path(tmp) / "kernels.cu"
        cu.write_text(source)
        proc = _run(["nvcc", "-cubin", f"-arch={arch}", "--Werror", "all-warnings", "-Xptxas", "-v",
                     "-o", str(Path(tmp) / "kernels.cubin"), str(cu)])
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc rejected the kernel source:\n{proc.stderr}")
    return proc.stdout + proc.stderr


def ptxas_report(report: str) -> dict[str, dict[str, int]]:
    """Per kernel: ``registers``, ``spill_stores``, ``spill_loads`` and ``stack`` (bytes) from ptxas -v."""
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in report.splitlines():
        m = re.search(r"Function properties for (\w+)", line)
        if m:
            current = out.setdefault(m.group(1), {})
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current is not None:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = out.setdefault(m.group(1), {})
        m = re.search(r"Used (\d+) registers", line)
        if m and current is not None:
            current["registers"] = int(m.group(1))
    return out


_POINTEE = {"double": np.dtype(np.float64), "float": np.dtype(np.float32), "bool": np.dtype(np.bool_)}


# --- CuPy's kernel classes, run on the host build ----------------------------------------------
def _pointer(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


class HostElementwiseKernel:
    """``cupy.ElementwiseKernel`` whose body runs as g++-compiled C on NumPy arrays.

    Follows CuPy's rules for the arguments it checks: all array arguments of the placeholder
    ``T`` share one dtype (CuPy raises ``TypeError`` otherwise), outputs have the broadcast
    shape, scalars take ``T``. Inputs are broadcast and copied to contiguous buffers.
    """

    def __init__(self, in_params, out_params, operation, name="kernel", preamble=""):
        self.ins, self.outs = parse_params(in_params), parse_params(out_params)
        for t, n in self.ins + self.outs:
            if t != "T" or n == "i" or n.startswith("_"):
                raise ValueError(f"parameter {t} {n}: only T, and no name 'i' or '_…' (CuPy's reserved names)")
        self.in_params, self.out_params, self.operation = in_params, out_params, operation
        self.name, self.preamble = name, preamble

    def source(self, ctype: str) -> str:
        return "\n".join([f"typedef {ctype} T;", self.preamble,
                          elementwise_function(self.in_params, self.out_params, self.operation, self.name)])

    def __call__(self, *args):
        if len(args) != len(self.ins) + len(self.outs):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.ins) + len(self.outs)} parameters")
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise TypeError(f"{self.name}: type is mismatched, placeholder T gets {sorted(map(str, dtypes))}")
        dtype = dtypes.pop()
        if dtype not in CTYPES:
            raise TypeError(f"{self.name}: no C type for {dtype}")
        outs = args[len(self.ins):]
        shape = np.broadcast_shapes(*(np.shape(a) for a in args))
        if any(not isinstance(o, np.ndarray) or o.shape != shape for o in outs):
            raise ValueError(f"{self.name}: outputs must be arrays of the broadcast shape {shape}")
        ins = [np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=dtype), shape)) for a in args[:len(self.ins)]]
        bufs = [np.ascontiguousarray(o) for o in outs]
        src = self.source(CTYPES[dtype])
        launch = getattr(host_library(src + "\n" + host_launcher(src, self.name)), f"launch_{self.name}")
        # one thread: the grid-stride loop visits every element
        launch(ctypes.c_uint(1), ctypes.c_uint(1), ctypes.c_uint(1), ctypes.c_uint(1), *map(_pointer, ins),
               *map(_pointer, bufs),
               ctypes.c_longlong(int(np.prod(shape))))
        for o, buf in zip(outs, bufs):
            if buf is not o:
                o[...] = buf


class HostRawKernel:
    """``cupy.RawKernel`` run on the host build: ``kernel(grid, block, args)`` runs every
    (block, thread) of a launch (a grid of up to three dimensions, one-dimensional blocks) in
    turn on the arguments' buffers."""

    def __init__(self, code: str, name: str):
        self.code, self.name = code, name
        self.params = _signature(code, name)

    def __call__(self, grid, block, args):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        lib = host_library(self.code + "\n" + host_launcher(self.code, self.name))
        c_args = []
        for (typ, pname), a in zip(self.params, args):
            if typ.endswith("*"):
                want = _POINTEE[typ.removeprefix("const ").rstrip("*").strip()]
                if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == want):
                    raise TypeError(f"{self.name}: {pname} ({typ}) needs a C-contiguous {want} array, "
                                    f"got {getattr(a, 'dtype', type(a).__name__)}")
                c_args.append(_pointer(a))
            elif typ == "long long":
                if not isinstance(a, np.int64):
                    raise TypeError(f"{self.name}: {pname} is long long, pass np.int64 (got {type(a).__name__})")
                c_args.append(ctypes.c_longlong(int(a)))
            elif typ == "int":
                if not isinstance(a, np.int32):
                    raise TypeError(f"{self.name}: {pname} is int, pass np.int32 (got {type(a).__name__})")
                c_args.append(ctypes.c_int(int(a)))
            else:
                raise TypeError(f"{self.name}: parameter type {typ} not supported by the host launcher")
        gx, gy, gz = (tuple(int(g) for g in grid) + (1, 1))[:3]
        getattr(lib, f"launch_{self.name}")(ctypes.c_uint(gx), ctypes.c_uint(gy), ctypes.c_uint(gz),
                                            ctypes.c_uint(int(block[0])), *c_args)
