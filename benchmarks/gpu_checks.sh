#!/usr/bin/env bash
# Every GPU measurement of the project in one go, for a machine with one CUDA device:
#   1. tests/test_gpu.py        the CuPy kernels compile and match the CPU reference;
#   2. python -m benchmarks gpu bandwidth, launch floor, dense roofline, scaling (gpu.json, png);
#   3. benchmarks.nn_throughput ResNet18 images/s: one model at batch 1024 against 8 × 128
#                               clients (loop, vmap), the harness's speed target;
#   4. savic nn                 the Fashion-MNIST experiment of configs/nn-fmnist.toml, for
#                               whatever time is left (it resumes from its checkpoints).
#
# Usage, from the repository root:
#   bash benchmarks/gpu_checks.sh OUTDIR [SECONDS] [PARTS]
# OUTDIR receives log.txt and the result files (at most eight, flat); SECONDS (default 480)
# bounds the whole script: each part gets its own share and is stopped at it, so that what
# was measured is always written. PARTS (default tests,suite,throughput,fmnist) picks the
# parts, comma-separated: a second call with PARTS=fmnist continues the experiment from its
# checkpoints (results/nn-fmnist/ stays on the machine while it is held). Shares: tests 120 s,
# throughput 100 s, the suite what is left but 60 s kept for the experiment when it runs too
# (and its data is there),
# the experiment the rest. Optional inputs, when present in the repository root:
#   .carry/whl/*.whl          wheels to install first (array-api-compat, tomli-w: the packages
#                             a GPU image with PyTorch and CuPy may lack), into /tmp/site;
#   .carry/fashion-mnist/     the four Fashion-MNIST IDX .gz files (else the Debian path).
# The commands that prepare them are in docs/nn-results.md ("Running on a GPU").
# log.txt starts with the Python and package versions found. gpu.json and throughput.json are
# rewritten after every section or mode, so a part stopped at its share keeps what it measured.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUTDIR [SECONDS] [PARTS]}
budget=${2:-480}
parts=",${3:-tests,suite,throughput,fmnist},"
want() { [[ $parts == *",$1,"* ]]; }
for p in ${parts//,/ }; do
    case $p in tests|suite|throughput|fmnist) ;;
        *) echo "gpu_checks: unknown part '$p' (known: tests, suite, throughput, fmnist)" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
log="$out/log.txt"
start=$(date +%s)
export PYTHONUNBUFFERED=1
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupy-kernel-cache}  # writable whatever $HOME is
export CUPY_TF32=0  # float32 matrix products in full float32, as the tests' tolerances assume
py=${PYTHON:-python3}

left() { echo $(( budget - ($(date +%s) - start) )); }
part() {  # part NAME SECONDS COMMAND...: run COMMAND for at most SECONDS, log it
    local name=$1 secs=$2
    shift 2
    local avail
    avail=$(left)
    (( secs > avail )) && secs=$avail
    if (( secs < 20 )); then
        echo "== $name: skipped, ${secs}s of its share left (${avail}s in all)" | tee -a "$log"
        return 0
    fi
    echo "== $name (at most ${secs}s): $*" | tee -a "$log"
    local t0 rc
    t0=$(date +%s)
    # SIGTERM at the share (Python then dies at once: the suites save as they go), SIGKILL 10 s later
    timeout -k 10 "$secs" "$@" >>"$log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - t0 ))s" | tee -a "$log"
}

{  # appended: a second call into the same OUTDIR keeps the first one's log
    echo "gpu_checks: $(date -u +%FT%TZ), budget ${budget}s, parts ${parts:1:-1}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
} >>"$log"

if compgen -G ".carry/whl/*.whl" >/dev/null; then
    # pure-Python wheels: where pip is missing, unpacking them is the same installation
    if ! $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/whl/*.whl >>"$log" 2>&1; then
        echo "pip failed; unpacking the wheels into /tmp/site instead" >>"$log"
        for w in .carry/whl/*.whl; do $py -m zipfile -e "$w" /tmp/site >>"$log" 2>&1; done
    fi
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
data_root=/usr/share/datasets/fashion-mnist
[[ -d .carry/fashion-mnist ]] && data_root=.carry/fashion-mnist
timeout 60 $py - >>"$log" 2>&1 <<'EOF'
import importlib, sys
print("python:", sys.executable, sys.version.split()[0])
for m in ("numpy", "scipy", "cupy", "torch", "matplotlib", "array_api_compat", "tomli_w", "pytest",
          "hypothesis", "numba"):
    try:
        print(f"  {m}: {getattr(importlib.import_module(m), '__version__', 'installed')}")
    except Exception as exc:
        print(f"  {m}: {type(exc).__name__}: {exc}")
EOF

# tests/conftest.py needs Hypothesis (not used by test_gpu.py): without it, skip the conftest.
# Warnings are shown, not errors (pyproject's filterwarnings = error): a deprecation warning
# from CuPy's import must not fail every test of this one run.
# -v: each test's verdict is logged as it ends, so a part stopped at its share still says which
# tests passed and which failed (-q would print them only in its final summary)
pytest_opts=(-v --tb=short -p no:cacheprovider -W default)
$py -c "import hypothesis" 2>/dev/null || pytest_opts+=(--noconftest)
want tests && part "CuPy path against the CPU reference" 120 $py -m pytest "${pytest_opts[@]}" tests/test_gpu.py
have_data=false
[[ -e $data_root/train-images-idx3-ubyte.gz || -e $data_root/train-images-idx3-ubyte ]] && have_data=true
reserve=$(( $(want throughput && echo 100 || echo 0) + $(want fmnist && $have_data && echo 60 || echo 0) ))
want suite && part "GPU benchmark suite" "$(( $(left) - reserve ))" $py -m benchmarks gpu --out "$out"
want throughput && part "ResNet18 throughput" 100 $py -m benchmarks.nn_throughput --json "$out/throughput.json"
if ! want fmnist; then
    :
elif $have_data; then
    part "Fashion-MNIST experiment" "$(( $(left) - 30 ))" $py -m savic_theory nn configs/nn-fmnist.toml \
        --out results/nn-fmnist --data-root "$data_root" --resume --no-progress
    part "report" 30 $py -m savic_theory nn configs/nn-fmnist.toml --out results/nn-fmnist --report
    for f in results/nn-fmnist/summary.json results/nn-fmnist/results.csv; do
        [[ -e $f ]] && cp "$f" "$out/nn-$(basename "$f")"
    done
    fig=$(ls results/nn-fmnist/figures/*.png 2>/dev/null | head -n 1)
    [[ -n $fig ]] && cp "$fig" "$out/nn-$(basename "$fig")"
else
    echo "== Fashion-MNIST experiment: skipped, no IDX files under $data_root" | tee -a "$log"
fi
echo "gpu_checks: done in $(( $(date +%s) - start ))s" | tee -a "$log"
