#!/usr/bin/env bash
# Builds Cordon and starts it on its embedded default: http://127.0.0.1:8080, the SQLite store in
# ./data. Extra arguments go to `cordon serve` (for example: --config deploy/cordon.example.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then
  echo "==> installing cmake (Pingora's zlib-ng needs it to build)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
fi
cargo build --release --bin cordon
echo "==> create a key in another shell: target/release/cordon keys create --name me"
exec target/release/cordon serve "$@"
