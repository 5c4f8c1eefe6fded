#!/usr/bin/env bash
# Runs every test. Installs what the tests need first, idempotently: Debian packages, a Python
# virtualenv with the official SDKs and one with libtorch (both kept outside the clone, in
# $CORDON_CACHE), and a running PostgreSQL. CI calls exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${CORDON_CACHE:-$HOME/.cache/cordon}"
mkdir -p "$CACHE"
log() { printf '==> %s\n' "$*"; }

# 1. Debian packages: cmake builds Pingora's zlib-ng; PostgreSQL for the store tests.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v pg_isready >/dev/null || missing+=(postgresql)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. PostgreSQL at 127.0.0.1:5432, started if it is not running.
export CORDON_TEST_DATABASE_URL="${CORDON_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

# 3. The Python virtualenv with the SDKs, rebuilt only when tests/requirements.txt changes.
VENV="$CACHE/venv"
stamp="$VENV/.requirements.sha256"
# Real OPA for the policy parity test: it embeds OPA v1.20.2 and declares Python >= 3.12, but
# works on 3.11, so it is installed apart from requirements.txt with --ignore-requires-python.
OPA_BINDINGS="opa-golib-python-bindings==0.4.4"
want=$( (cat tests/requirements.txt; echo "$OPA_BINDINGS") | sha256sum | cut -d' ' -f1)
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "preparing the Python virtualenv in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  "$VENV/bin/pip" install -q --disable-pip-version-check --ignore-requires-python "$OPA_BINDINGS"
  echo "$want" > "$stamp"
fi
export CORDON_PYTHON="$VENV/bin/python"

# 4. libtorch for the private inference server: the torch==2.13.0 wheel (and the reference
#    libraries its tests compare against) in a second virtualenv; exports LIBTORCH_USE_PYTORCH,
#    VIRTUAL_ENV and CORDON_TORCH_PYTHON.
source inference/setup.sh

# 5. Lints, then every test in the workspace.
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo test"
cargo test --workspace
