#!/usr/bin/env bash
# Create / refresh the project's virtual environments.
#
#   bash scripts/envs.sh [main|legacy|cntk|all]...     (default: all)
#
#   main    .venvs/main    Python 3.11  torch (CPU) + keras 3 + tensorflow-cpu + numba + netdsl -e
#   legacy  .venvs/legacy  Python 3.11  tensorflow-cpu 2.15.1 (tf.estimator) + mxnet 1.9.1 (gluon)
#   cntk    .venvs/cntk    Python 3.6   cntk 2.7, run through .venvs/cntk/bin/python-cntk
#
# Each venv stores the sha256 of its recipe (pin file + this recipe's version)
# in <venv>/.pins-sha256.  A venv whose stamp matches is reused untouched; a
# venv whose stamp differs (or is missing: an interrupted build) is deleted and
# rebuilt from scratch.  The stamp is written only after the venv's smoke test
# passed.  For main, a change of pyproject.toml alone re-runs the editable
# install only (<venv>/.pyproject-sha256).
#
# CNTK is best effort: if it cannot be built on this machine (no Python 3.6,
# no apt, ...) the script prints "CNTK NOT EXECUTED: <reason>", writes the
# reason to .venvs/cntk.unavailable and carries on (exit 0).  Set
# NETDSL_REQUIRE_CNTK=1 to make that fatal.
#
# Knobs: NETDSL_PY36=/path/to/python3.6   NETDSL_PY311=/path/to/python3.11
#        NETDSL_REQUIRE_CNTK=1             NETDSL_SKIP_VERIFY=1 (no smoke tests)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="$ROOT/.venvs"
REQ="$ROOT/requirements"
# Bump a RECIPE_* value to force a rebuild when the build steps change.
RECIPE_MAIN=1
RECIPE_LEGACY=1
RECIPE_CNTK=1
PIP36_VERSION="21.3.1"   # last pip that runs on Python 3.6

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export DEBIAN_FRONTEND=noninteractive
export PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-}
# Keep everything the smoke tests write out of $HOME.
export KERAS_HOME="$VENVS/keras-home" MPLCONFIGDIR="$VENVS/mpl-config"
export NUMBA_CACHE_DIR="$VENVS/numba-cache" TF_CPP_MIN_LOG_LEVEL=2
PIP_FLAGS=(--no-input --disable-pip-version-check)
# The CPU torch wheel lives here on this kind of machine; pip.conf points at it
# too, but don't depend on the environment variables surviving into CI.
if [ -d /opt/wheels ]; then PIP_FLAGS+=(--find-links /opt/wheels); fi

mkdir -p "$VENVS" "$KERAS_HOME" "$MPLCONFIGDIR" "$NUMBA_CACHE_DIR"
# .venvs/ is in .gitignore already; this keeps it invisible even if it isn't.
[ -f "$VENVS/.gitignore" ] || echo '*' > "$VENVS/.gitignore"

log() { printf '[envs %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
# step NAME CMD...: run CMD and print how long it took.  Never call step (or a
# build_* function) on the left of || / && or in an if: bash then ignores
# set -e inside it.  Failures are reported by the ERR trap and end the script.
step() {
    local name=$1; shift
    local t0; t0=$(now)
    log "-> $name"
    "$@"
    log "<- $name: ok in $(elapsed "$t0")s"
}
trap 'rc=$?; log "FAILED (exit $rc): ${BASH_COMMAND:0:160}  [${BASH_SOURCE[0]##*/}:$LINENO]" >&2' ERR
sha_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() {  # stamp_ok VENV SHA -> 0 if the venv exists, runs and is current
    [ -x "$1/bin/python" ] && [ -f "$1/.pins-sha256" ] \
        && [ "$(cat "$1/.pins-sha256")" = "$2" ] && "$1/bin/python" -c 'import sys' 2>/dev/null
}
new_venv() {  # new_venv PYTHON DIR
    rm -rf "$2"
    "$1" -m venv "$2"
}
find_py311() {
    local c
    for c in "${NETDSL_PY311:-}" python3.11 python3 /root/.pyenv/versions/3.11.7/bin/python; do
        [ -n "$c" ] || continue
        c=$(command -v "$c" 2>/dev/null) || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            "$c" -c 'import sys; print(sys.executable)'; return 0   # through pyenv shims
        fi
    done
    return 1
}
# Debian packages: install the missing ones (root or passwordless sudo only).
APT_UPDATED=0
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { echo "apt-get not available to install: ${missing[*]}" >&2; return 1; }
    local SUDO=()
    if [ "$(id -u)" != 0 ]; then
        sudo -n true 2>/dev/null || { echo "not root and no passwordless sudo to install: ${missing[*]}" >&2; return 1; }
        SUDO=(sudo -n)
    fi
    if [ $APT_UPDATED = 0 ]; then
        step "apt-get update" "${SUDO[@]}" apt-get update -qq </dev/null
        APT_UPDATED=1
    fi
    step "apt-get install ${missing[*]}" "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
}
# pip VENV ARGS...: the venv's pip with our flags.  This machine's pip.conf
# names local indexes that hold only some projects; drop pip's per-project
# "is ignored" warnings about them (pip's own exit status is kept).
pip_in() {
    local v=$1; shift
    "$v/bin/python" -m pip "$1" "${PIP_FLAGS[@]}" "${@:2}" 2>&1 \
        | { grep -v -e 'is ignored: it is neither a file nor a directory' || true; }
}
write_freeze() {  # installed versions, for docs and for the tests
    "$1/bin/python" -m pip freeze --all "${@:2}" 2>/dev/null > "$1/.installed.txt" || true
}

# ---------------------------------------------------------------- main ------
verify_main() {
    local py="$VENVS/main/bin/python"
    "$py" - <<'EOF'
import torch
assert not torch.cuda.is_available(), "expected a CPU-only torch"
assert "+cpu" in torch.__version__ or torch.version.cuda is None, torch.__version__
x = torch.ones(3, requires_grad=True); (x * 2).sum().backward()
assert x.grad.tolist() == [2.0, 2.0, 2.0]
print("torch", torch.__version__, "cuda build:", torch.version.cuda)
import numba, numpy as np
@numba.njit(cache=False)
def s(a):
    t = 0.0
    for v in a:
        t += v
    return t
assert s(np.arange(10.0)) == 45.0
print("numba", numba.__version__, "numpy", np.__version__)
import lark, jinja2, tqdm, pytest, hypothesis, netdsl
print("netdsl from", netdsl.__file__)
EOF
    local backend
    for backend in torch tensorflow; do
        KERAS_BACKEND=$backend "$py" - <<'EOF'
import os, numpy as np, keras
assert keras.backend.backend() == os.environ["KERAS_BACKEND"], keras.backend.backend()
m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
m.compile(optimizer="sgd", loss="mse")
h = m.fit(np.random.rand(32, 4).astype("float32"), np.random.rand(32, 1).astype("float32"),
          epochs=1, batch_size=8, verbose=0)
extra = ""
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    extra = "tensorflow " + tf.__version__
print("keras", keras.__version__, "backend", keras.backend.backend(), "loss", round(h.history["loss"][0], 4), extra)
EOF
    done
}
build_main() {
    local v="$VENVS/main" pins="$REQ/main.txt"
    local sha; sha=$(printf 'recipe=%s\n' "$RECIPE_MAIN" | cat - "$pins" | sha256sum | cut -d' ' -f1)
    local psha; psha=$(sha_of "$ROOT/pyproject.toml")
    if stamp_ok "$v" "$sha"; then
        if [ "$(cat "$v/.pyproject-sha256" 2>/dev/null)" = "$psha" ]; then
            log "main: reusing $v (pins unchanged)"; return 0
        fi
        log "main: pyproject.toml changed -> re-running the editable install only"
        step "main: pip install -e .[dev,torch,keras,onnx]" \
            pip_in "$v" install -q -c "$pins" -e "$ROOT[dev,torch,keras,onnx]"
        echo "$psha" > "$v/.pyproject-sha256"
        write_freeze "$v" --exclude-editable
        return 0
    fi
    [ -e "$v" ] && log "main: pins changed or venv incomplete -> rebuilding $v"
    local py; py=$(find_py311) || { echo "no Python 3.11 found" >&2; return 1; }
    step "main: create venv ($py)" new_venv "$py" "$v"
    # -r pins everything (torch==2.13.0+cpu so pip can never fall back to a
    # CUDA build from the index); -c keeps the extras' resolution on the pins.
    step "main: pip install -r requirements/main.txt" \
        pip_in "$v" install -q -r "$pins"
    step "main: pip install -e .[dev,torch,keras,onnx]" \
        pip_in "$v" install -q -c "$pins" -e "$ROOT[dev,torch,keras,onnx]"
    [ -n "${NETDSL_SKIP_VERIFY:-}" ] || step "main: smoke test (torch, numba, keras x2)" verify_main
    write_freeze "$v" --exclude-editable
    echo "$psha" > "$v/.pyproject-sha256"
    echo "$sha" > "$v/.pins-sha256"
}

# -------------------------------------------------------------- legacy ------
verify_legacy() {
    "$VENVS/legacy/bin/python" - <<'EOF'
import tempfile, warnings, logging
warnings.filterwarnings("ignore")
import numpy as np
import tensorflow as tf
tf.get_logger().setLevel(logging.ERROR)
X = np.random.rand(16, 4).astype("float32"); y = np.random.randint(0, 2, 16).astype("int32")

def model_fn(features, labels, mode):
    h = tf.compat.v1.layers.dense(features["x"], 8, activation=tf.nn.relu)
    logits = tf.compat.v1.layers.dense(h, 2)
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

def input_fn():
    return tf.data.Dataset.from_tensor_slices(({"x": X}, y)).batch(8)

with tempfile.TemporaryDirectory() as d:
    est = tf.estimator.Estimator(model_fn=model_fn, model_dir=d)
    est.train(input_fn, steps=1)
    assert est.get_variable_value("global_step") == 1
from importlib.metadata import version
print("tensorflow", tf.__version__, "tensorflow-estimator", version("tensorflow-estimator"),
      "keras", version("keras"), "-> estimator trained 1 step")

import mxnet as mx
from mxnet import autograd, gluon, nd
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Dense(8, activation="relu"), gluon.nn.Dense(2))
net.initialize(); net.hybridize()
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
lossf = gluon.loss.SoftmaxCrossEntropyLoss()
with autograd.record():
    loss = lossf(net(nd.array(X)), nd.array(y))
loss.backward(); trainer.step(X.shape[0])
print("mxnet", mx.__version__, "numpy", np.__version__, "-> gluon trained 1 step, loss",
      round(float(loss.mean().asscalar()), 4))
EOF
}
build_legacy() {
    local v="$VENVS/legacy" pins="$REQ/legacy.txt"
    local sha; sha=$(printf 'recipe=%s\n' "$RECIPE_LEGACY" | cat - "$pins" | sha256sum | cut -d' ' -f1)
    if stamp_ok "$v" "$sha"; then log "legacy: reusing $v (pins unchanged)"; return 0; fi
    [ -e "$v" ] && log "legacy: pins changed or venv incomplete -> rebuilding $v"
    # mxnet's libmxnet.so links the system libgomp and libquadmath (it ships
    # its own libgfortran.so.3 and openblas).
    step "legacy: system libs for mxnet (libgomp1 libquadmath0)" apt_ensure libgomp1 libquadmath0
    local py; py=$(find_py311) || { echo "no Python 3.11 found" >&2; return 1; }
    step "legacy: create venv ($py)" new_venv "$py" "$v"
    step "legacy: pip install -r requirements/legacy.txt" \
        pip_in "$v" install -q -r "$pins"
    [ -n "${NETDSL_SKIP_VERIFY:-}" ] || step "legacy: smoke test (tf.estimator, gluon)" verify_legacy
    write_freeze "$v"
    echo "$sha" > "$v/.pins-sha256"
}

# ---------------------------------------------------------------- cntk ------
find_py36() {
    local c cands=(/root/.pyenv/versions/3.6.15/bin/python python3.6)
    # NETDSL_PY36, when set, is the only candidate (e.g. =/nonexistent to
    # check the "CNTK NOT EXECUTED" path).
    [ -n "${NETDSL_PY36:-}" ] && cands=("$NETDSL_PY36")
    for c in "${cands[@]}"; do
        [ -n "$c" ] || continue
        c=$(command -v "$c" 2>/dev/null) || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 6))' 2>/dev/null; then
            "$c" -c 'import sys; print(sys.executable)'; return 0
        fi
    done
    if [ -z "${NETDSL_PY36:-}" ] && command -v pyenv >/dev/null; then
        c=$(pyenv prefix 3.6.15 2>/dev/null)/bin/python && [ -x "$c" ] && { echo "$c"; return 0; }
    fi
    return 1
}
find_lib() {  # find_lib SONAME -> absolute path of the system library
    local p
    p=$(/sbin/ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n && /x86-64/ {print $NF; exit}')
    if [ -z "$p" ]; then
        for p in /usr/lib/x86_64-linux-gnu/"$1" /lib/x86_64-linux-gnu/"$1" /usr/lib64/"$1" /usr/lib/"$1"; do
            [ -e "$p" ] && break; p=
        done
    fi
    [ -n "$p" ] && readlink -f "$p"
}
make_mpi_shim() {
    # CNTK 2.7 was linked against Open MPI 1.10 (libmpi.so.12, libmpi_cxx.so.1);
    # Debian 12 ships Open MPI 4.1 (libmpi.so.40, libmpi_cxx.so.40).  The
    # symbols CNTK uses are still there, so a private dir of soname symlinks is
    # enough -- it is only put on LD_LIBRARY_PATH by bin/python-cntk.
    local shim="$VENVS/cntk/mpi-shim" mpi mpicxx
    mpi=$(find_lib libmpi.so.40) || true
    mpicxx=$(find_lib libmpi_cxx.so.40) || true
    [ -n "$mpi" ] && [ -n "$mpicxx" ] || { echo "libmpi.so.40 / libmpi_cxx.so.40 not found" >&2; return 1; }
    rm -rf "$shim"; mkdir -p "$shim"
    ln -s "$mpi" "$shim/libmpi.so.12"
    ln -s "$mpicxx" "$shim/libmpi_cxx.so.1"
    cat > "$VENVS/cntk/bin/python-cntk" <<'EOF'
#!/bin/sh
# Python 3.6 of the CNTK venv, with the Open MPI soname shim on the loader path.
here=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH="$here/mpi-shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$here/bin/python" "$@"
EOF
    chmod +x "$VENVS/cntk/bin/python-cntk"
    # Anything else the core CNTK libraries still cannot resolve?  (libmklml's
    # libiomp5 sits next to it and is found through libCntk.Math's RPATH at
    # run time, so ldd of the core libraries, not of every .so, is the check.)
    local d="$VENVS/cntk/lib/python3.6/site-packages/cntk" so missing="" pylib
    # libpython3.6m.so (pyenv builds it shared) is already loaded by python.
    pylib=$("$VENVS/cntk/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    for so in "$d"/../_cntk_py*.so "$d"/libs/libCntk.Core-*.so "$d"/libs/libCntk.Math-*.so; do
        [ -e "$so" ] || { echo "expected CNTK library missing: $so" >&2; return 1; }
        missing+=$(LD_LIBRARY_PATH="$shim:$pylib" ldd "$so" 2>/dev/null | grep 'not found' || true)
    done
    if [ -n "$missing" ]; then echo "core CNTK libraries still miss: $missing" >&2; return 1; fi
    # Optional plugins CNTK loads only on use; on Debian 12 these stay broken:
    # the image deserializer wants Ubuntu 16.04's libjpeg.so.8, libpng12.so.0,
    # libtiff.so.5, libjasper.so.1; BinaryConvolution wants a Halide build.
    local opt
    opt=$(for so in "$d"/libs/Cntk.*.so; do
        LD_LIBRARY_PATH="$shim:$pylib:$d/libs" ldd "$so" 2>/dev/null | awk -v f="${so##*/}" '/not found/ {print f ": " $1}'
    done | sort -u | tr '\n' ' ')
    [ -z "$opt" ] || log "cntk: note, optional plugins with unresolved libs (not used by netdsl): $opt"
}
verify_cntk() {
    "$VENVS/cntk/bin/python-cntk" - <<'EOF'
import numpy as np
import cntk as C
x = C.input_variable(4); y = C.input_variable(10)
model = C.layers.Sequential([C.layers.Dense(10)])(x)
loss = C.cross_entropy_with_softmax(model, y)
err = C.classification_error(model, y)
lr = C.learning_parameter_schedule(0.1)
trainer = C.Trainer(model, (loss, err), [C.learners.sgd(model.parameters, lr)])
rng = np.random.RandomState(0)
for _ in range(5):
    xs = rng.rand(8, 4).astype(np.float32)
    ys = np.eye(10, dtype=np.float32)[rng.randint(0, 10, 8)]
    trainer.train_minibatch({x: xs, y: ys})
print("cntk", C.__version__, "numpy", np.__version__, "device", C.device.use_default_device(),
      "-> 5 minibatches, loss", round(trainer.previous_minibatch_loss_average, 4))
EOF
}
cntk_unavailable() {
    local reason=$1
    echo "$reason" > "$VENVS/cntk.unavailable"
    rm -f "$VENVS/cntk/.pins-sha256"
    printf '\n%s\n!!! CNTK NOT EXECUTED: %s\n!!! (recorded in %s)\n%s\n\n' \
        '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' \
        "$reason" "$VENVS/cntk.unavailable" \
        '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
    if [ -n "${NETDSL_REQUIRE_CNTK:-}" ]; then return 1; fi
    return 0
}
build_cntk() {
    local v="$VENVS/cntk" pins="$REQ/cntk.txt"
    local sha; sha=$(printf 'recipe=%s pip=%s\n' "$RECIPE_CNTK" "$PIP36_VERSION" | cat - "$pins" | sha256sum | cut -d' ' -f1)
    if stamp_ok "$v" "$sha" && [ -x "$v/bin/python-cntk" ]; then
        rm -f "$VENVS/cntk.unavailable"
        log "cntk: reusing $v (pins unchanged)"; return 0
    fi
    [ -e "$v" ] && log "cntk: pins changed or venv incomplete -> rebuilding $v"
    local py
    if ! py=$(find_py36); then
        cntk_unavailable "no Python 3.6 interpreter on this machine (CNTK 2.7 wheels exist only for Python <= 3.6; pyenv 3.6.15 or NETDSL_PY36 expected)"
        return
    fi
    if [ "$(uname -m)" != x86_64 ]; then
        cntk_unavailable "CNTK 2.7 wheels are x86_64-only, this machine is $(uname -m)"; return
    fi
    # The build runs in a child bash so that set -e holds inside it while its
    # failure stays non-fatal here; it records the stage it is in.
    local rc=0
    bash "${BASH_SOURCE[0]}" __cntk_build "$py" "$sha" || rc=$?
    if [ $rc -ne 0 ]; then
        cntk_unavailable "stage '$(cat "$VENVS/.cntk-stage" 2>/dev/null || echo '?')' failed (exit $rc), see the log above"
        return
    fi
    rm -f "$VENVS/cntk.unavailable" "$VENVS/.cntk-stage"
}
cntk_stage() { echo "$1" > "$VENVS/.cntk-stage"; }
cntk_build_inner() {  # runs in its own bash process, set -e effective
    local py=$1 sha=$2 v="$VENVS/cntk" pins="$REQ/cntk.txt"
    cntk_stage "apt-get install libopenmpi3"
    step "cntk: system Open MPI (libopenmpi3)" apt_ensure libopenmpi3
    cntk_stage "python3.6 -m venv"
    step "cntk: create venv ($py)" new_venv "$py" "$v"
    cntk_stage "pip install pip==$PIP36_VERSION"
    step "cntk: pip install pip==$PIP36_VERSION" \
        pip_in "$v" install -q "pip==$PIP36_VERSION"
    cntk_stage "pip install -r requirements/cntk.txt"
    step "cntk: pip install -r requirements/cntk.txt" \
        pip_in "$v" install -q -r "$pins"
    cntk_stage "Open MPI soname shim + bin/python-cntk"
    step "cntk: Open MPI soname shim + bin/python-cntk" make_mpi_shim
    if [ -z "${NETDSL_SKIP_VERIFY:-}" ]; then
        cntk_stage "smoke test: import cntk + train Sequential/Dense with Trainer/sgd"
        step "cntk: smoke test (Sequential/Dense + Trainer/sgd)" verify_cntk
    fi
    write_freeze "$v"
    echo "$sha" > "$v/.pins-sha256"
}

# ------------------------------------------------------------ manifest ------
# .venvs/envs.json: where each venv's python is and what it has, for Python
# code (tests, tools) that needs to find them.
write_manifest() {
    local py; py=$(find_py311) || py=python3
    "$py" - "$VENVS" <<'EOF'
import json, os, re, sys
venvs = sys.argv[1]
def pins(name):
    out = {}
    try:
        with open(os.path.join(venvs, name, ".installed.txt")) as f:
            for line in f:
                if "==" in line:
                    k, v = line.strip().split("==", 1)
                    out[re.sub(r"[-_.]+", "-", k).lower()] = v  # PEP 503 name
    except OSError:
        pass
    return out
def ready(name):
    return os.path.exists(os.path.join(venvs, name, ".pins-sha256"))
m = {}
for name, exe in (("main", "bin/python"), ("legacy", "bin/python"), ("cntk", "bin/python-cntk")):
    m[name] = {"path": os.path.join(venvs, name), "python": os.path.join(venvs, name, exe),
               "ready": ready(name), "installed": pins(name)}
try:
    with open(os.path.join(venvs, "cntk.unavailable")) as f:
        m["cntk"]["unavailable"] = f.read().strip()
except OSError:
    pass
with open(os.path.join(venvs, "envs.json"), "w") as f:
    json.dump(m, f, indent=1, sort_keys=True)
EOF
}

if [ "${1:-}" = __cntk_build ]; then
    shift; cntk_build_inner "$@"; exit 0
fi

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(all)
want=()
for t in "${targets[@]}"; do
    case $t in
        all) want+=(main legacy cntk) ;;
        main|legacy|cntk) want+=("$t") ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "usage: $0 [main|legacy|cntk|all]..." >&2; exit 2 ;;
    esac
done
# graphviz's `dot` binary draws `netdsl graph` pictures (Debian package; root here and in CI).
system_tools() {
    command -v dot >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || { log "no dot and no apt-get: graph tests will skip"; return 0; }
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; } \
        || log "apt-get install graphviz failed: graph tests will skip"
}
T0=$(now)
step "system tools (graphviz dot)" system_tools
for t in "${want[@]}"; do
    step "env $t" "build_$t"
done
write_manifest
log "all requested envs (${want[*]}) ready in $(elapsed "$T0")s; manifest: $VENVS/envs.json"
