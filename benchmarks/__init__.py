"""Benchmark suites of savic_theory (not tests: they time, they do not assert speed).

Run from the repository root::

    python -m benchmarks cpu            # simulator vs per-client NumPy/PyTorch loops + CPU scaling
    python -m benchmarks gpu            # CuPy: bandwidth, launch floor, GPU scaling (needs a GPU)
    python -m benchmarks rules          # a sweep over rules in one call against one call per rule
    python -m benchmarks all --quick    # cpu, rules and gpu, fewer points and repeats (needs a GPU)
    bash benchmarks/gpu_checks.sh DIR   # every GPU measurement (also the ResNet18 ones), timed

Results (JSON, with the machine they were measured on) and plots go to ``--out``
(default ``results/benchmarks``; ``--out docs/performance`` rewrites the committed results that
``docs/performance.md`` explains). Modules: ``cpu``,
``gpu``, ``dense`` (dense and eigenbasis gradients against the copy and GEMM rooflines, both
devices), ``baselines`` (the loops people write today), ``nn_throughput`` (ResNet18 images per
second), ``_common`` (timing helpers).
"""
