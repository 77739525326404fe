"""Benchmark suites of savic_theory (not tests: they time, they do not assert speed).

Run from the repository root::

    python -m benchmarks cpu            # simulator vs per-client NumPy/PyTorch loops + CPU scaling
    python -m benchmarks gpu            # CuPy: bandwidth, launch floor, GPU scaling (needs a GPU)
    python -m benchmarks all --quick    # both, fewer points and repeats

Results (JSON, with the machine they were measured on) and plots go to ``--out``
(default ``docs/performance``); ``docs/performance.md`` explains them. Modules: ``cpu``,
``gpu``, ``baselines`` (the loops people write today), ``_common`` (timing helpers).
"""
