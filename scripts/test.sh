#!/usr/bin/env bash
# Set up the environments, then run the test suite in .venvs/main.
#   bash scripts/test.sh [pytest args...]
# Exports for the tests:
#   NETDSL_DATA             <repo>/../shared/data (absolute)
#   NETDSL_MAIN_PYTHON      .venvs/main/bin/python
#   NETDSL_LEGACY_PYTHON    .venvs/legacy/bin/python (tf.estimator, gluon)
#   NETDSL_CNTK_PYTHON      .venvs/cntk/bin/python-cntk, or empty when CNTK is
#   NETDSL_CNTK_UNAVAILABLE   unavailable on this machine, with the reason here
# pytest's exit 5 ("no tests collected") counts as a failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="$ROOT/.venvs"
cd "$ROOT"

t0=$(date +%s)
bash "$ROOT/scripts/setup.sh"
echo "[test] setup took $(( $(date +%s) - t0 ))s"

data="$(cd "$ROOT/.." && pwd)/shared/data"
[ -d "$data" ] || echo "[test] WARNING: shared data dir $data does not exist" >&2
export NETDSL_DATA="$data"
export NETDSL_MAIN_PYTHON="$VENVS/main/bin/python"
# Nothing under $HOME: keras config/datasets, matplotlib, numba's cache.
export KERAS_HOME="$VENVS/keras-home"
export MPLCONFIGDIR="$VENVS/mpl-config"
export NUMBA_CACHE_DIR="$VENVS/numba-cache"
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$KERAS_HOME" "$MPLCONFIGDIR" "$NUMBA_CACHE_DIR"

if [ -x "$VENVS/legacy/bin/python" ] && [ -f "$VENVS/legacy/.pins-sha256" ]; then
    export NETDSL_LEGACY_PYTHON="$VENVS/legacy/bin/python"
else
    export NETDSL_LEGACY_PYTHON=""
fi
if [ -f "$VENVS/cntk.unavailable" ] || [ ! -x "$VENVS/cntk/bin/python-cntk" ] || [ ! -f "$VENVS/cntk/.pins-sha256" ]; then
    export NETDSL_CNTK_PYTHON=""
    export NETDSL_CNTK_UNAVAILABLE="$(cat "$VENVS/cntk.unavailable" 2>/dev/null || echo "the CNTK venv was not built")"
    echo "[test] !!! CNTK NOT EXECUTED: $NETDSL_CNTK_UNAVAILABLE" >&2
else
    export NETDSL_CNTK_PYTHON="$VENVS/cntk/bin/python-cntk"
    unset NETDSL_CNTK_UNAVAILABLE
fi

echo "[test] NETDSL_DATA=$NETDSL_DATA"
echo "[test] NETDSL_LEGACY_PYTHON=${NETDSL_LEGACY_PYTHON:-<unset>}"
echo "[test] NETDSL_CNTK_PYTHON=${NETDSL_CNTK_PYTHON:-<unset>}"

rc=0
"$VENVS/main/bin/python" -m pytest -q -p no:cacheprovider "$@" || rc=$?
if [ $rc -eq 5 ]; then
    echo "[test] FAILURE: pytest collected no tests (exit 5)" >&2
    exit 1
fi
exit $rc
