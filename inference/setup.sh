#!/usr/bin/env bash
# Prepares libtorch for building `cordon-inference`, idempotently: a virtualenv with the PyPI
# wheel torch==2.13.0 (the libtorch tch 0.26 links) and the reference libraries the tests
# compare against, at one fixed path outside the clone. Source it to build:
#
#   source inference/setup.sh && cargo build --release -p cordon-inference
#
# It exports LIBTORCH_USE_PYTORCH=1 and puts the venv's python first on PATH, which is how
# torch-sys finds libtorch; build.rs embeds an rpath to the venv's torch/lib, so the binary
# runs without LD_LIBRARY_PATH. If the venv moves, run `cargo clean -p torch-sys`.
# CORDON_TORCH_VENV overrides the path (default: ${CORDON_CACHE:-~/.cache/cordon}/torch-venv).

_cordon_torch_setup() {
  local here venv stamp want
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  venv="${CORDON_TORCH_VENV:-${CORDON_CACHE:-$HOME/.cache/cordon}/torch-venv}"
  stamp="$venv/.requirements.sha256"
  want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
  if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "==> preparing the libtorch virtualenv in $venv (torch==2.13.0, about 5 GB)"
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" || return 1
    echo "$want" > "$stamp"
  fi
  export VIRTUAL_ENV="$venv"
  export PATH="$venv/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
  export CORDON_TORCH_PYTHON="$venv/bin/python"
  # Hugging Face libraries in the tests never reach for a hub.
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  _cordon_torch_setup
  echo "libtorch virtualenv ready: $VIRTUAL_ENV"
else
  _cordon_torch_setup
fi
