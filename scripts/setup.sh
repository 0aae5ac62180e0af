#!/usr/bin/env bash
# Create (or refresh) every environment the project needs: .venvs/main,
# .venvs/legacy and .venvs/cntk.  Safe to re-run: current venvs are reused.
# See docs/environments.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/envs.sh" all
