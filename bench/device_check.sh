#!/usr/bin/env bash
# jadam on whatever accelerator this machine has (or its CPU), in under 8 minutes:
#
#     bash bench/device_check.sh
#
# 1. installs what is missing (jax must already have its accelerator plugin): from wheels in
#    .whl/ where the machine has no network, else from the package index;
# 2. prints the devices JAX sees;
# 3. runs a fast subset of the test suite (Adam against its reference, packing, the NNX packed
#    model, low-precision rounding, the quantizers' bounds and the dead-unit cases);
# 4. times the update-only cases of `python -m bench` (optax against jadam, with one_pass where
#    the backend fuses sibling loops, torch on the same device where its build sees it), the
#    1,000-leaf NNX model's whole step (jadam.PackedModel) and the MNIST example's step;
# 5. prints one table of it all.
#
# Results go to $OUT (the device tool's folder) or bench/results/, named by backend, six files:
# device-check-<backend>.log (every stage's output), .json and -leaves.json (python -m bench's
# reports, each with its .md), -mnist.json, and device-check-<backend>.md, the table (it takes
# the place of the first report's .md). Each stage has its own time limit, so that a slow one
# cannot eat the others', and the update cases of one large leaf run before those of many leaves,
# whose compilation is the slowest on an accelerator; the script exits nonzero if any stage failed.
# Environment: PYTHON (default python3), BUDGET_S (default 470 seconds in all).

set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-bench/results}
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Several processes would each take most of a GPU's memory by default.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
end=$((SECONDS + ${BUDGET_S:-470}))
failed=()

left() { echo $((end - SECONDS)); }
stage() {  # stage NAME SECONDS COMMAND...: runs COMMAND within min(SECONDS, time left),
           # its output also appended to $DEST/$tag.log
    local name=$1 limit=$2; shift 2
    local budget; budget=$(left)
    ((limit > budget)) && limit=$budget
    if ((limit < 20)); then
        echo "== $name: skipped, $budget s left"; failed+=("$name (no time)"); return
    fi
    echo "== $name (at most $limit s)" | tee -a "$DEST/$tag.log"
    if ! timeout "$limit" "$@" 2>&1 | tee -a "$DEST/$tag.log"; then failed+=("$name"); fi
}

# 1. What the checks import, by module and by package.
missing=()
for pair in jax:jax optax:optax flax:flax chex:chex pytest:pytest hypothesis:hypothesis \
            orbax.checkpoint:orbax-checkpoint sklearn:scikit-learn; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
done
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    if [ -d .whl ]; then
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/jadam-site .whl/*.whl
    else
        "$PY" -m pip install -q --target /tmp/jadam-site "${missing[@]}"
    fi || failed+=("install")
    export PYTHONPATH="$PYTHONPATH:/tmp/jadam-site"
fi

# 2. The devices.
backend=$("$PY" -c "import jax; print(jax.default_backend())" 2>/dev/null || echo none)
"$PY" -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__);
print(jax.devices())" || failed+=("jax")
tag="device-check-$backend"

# 3. The fast subset of the tests.
workers=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 4" || echo "")
# shellcheck disable=SC2086  # (workers is two words or none)
stage tests 140 "$PY" -m pytest -q --maxfail=5 -p no:cacheprovider $workers \
    tests/test_adam.py tests/test_packing.py tests/test_packed_model.py tests/test_rounding.py \
    tests/test_quantize.py::test_dynamic_maps tests/test_quantize.py::test_four_bit_maps \
    tests/test_quantize.py::test_round_trip_picks_the_nearest_code \
    tests/test_quantize.py::test_adam_state_bytes_per_parameter \
    tests/test_quantize.py::test_a_dead_unit_never_steps_more_than_a_few_learning_rates

# 4. Update-only steps, and the whole step of a 1,000-leaf NNX model and of the example.
stage bench 130 "$PY" -m bench --cases "leaf of 10M" "leaf of 50M" "MNIST CNN tree" \
    "transformer 40M" \
    --contenders optax jadam.adam one_pass "packed params" quantized torch --rounds 3 \
    --out "$DEST/$tag.json"
stage bench_leaves 130 "$PY" -m bench --cases "1M in 1,000 leaves" "NNX residual MLP" \
    --contenders optax jadam.adam "packed params" PackedModel torch --rounds 3 \
    --out "$DEST/$tag-leaves.json"
stage mnist_step 60 "$PY" -m bench.mnist_cnn --rounds 6 --out "$DEST/$tag-mnist.json"

# 5. One table.
"$PY" - "$DEST/$tag.json" "$DEST/$tag-leaves.json" "$DEST/$tag-mnist.json" "$DEST/$tag.md" \
    <<'EOF' || failed+=("table")
import json, pathlib, sys
*runs, mnist, md = map(pathlib.Path, sys.argv[1:])
reports = [json.loads(run.read_text()) for run in runs if run.exists()]
lines = []
if reports:
    meta = reports[0]["meta"]
    lines += [f"{meta['machine']}, jax {meta['jax']}, {meta['date']}", "",
              "| case | contender | median ms | / optax | compile s |", "|---|---|---|---|---|"]
for report in reports:
    for case, r in report["cases"].items():
        for name, x in r["results"].items():
            ratio = x.get("vs optax.adam")
            compile_s = x.get("compile_s")
            lines.append(f"| {case} | {name} | {x['median_ms']:.2f} | "
                         f"{'' if ratio is None else f'{ratio:.2f}'} | "
                         f"{'' if compile_s is None else f'{compile_s:.1f}'} |")
if mnist.exists():
    rows = json.loads(mnist.read_text())["results"]
    lines += ["", "| MNIST example's step | images/s by contender | jadam / optax |",
              "|---|---|---|"]
    for r in rows:
        speeds = ", ".join(f"{k} {v:,.0f}" for k, v in r.items() if isinstance(v, float)
                           and k != "ratio_jadam_to_optax")
        lines.append(f"| {r['case']} | {speeds} | {r['ratio_jadam_to_optax']:.2f} |")
md.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"; exit 1
fi
echo "all stages passed in $SECONDS s"
