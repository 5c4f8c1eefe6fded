#!/usr/bin/env bash
# Generates a private CA, a server certificate for Cordon's HTTPS listener and a client
# certificate for mTLS to upstreams, with openssl. For labs and tests; production certificates
# come from the organisation's PKI.
#   deploy/certs/gen-certs.sh OUT_DIR [SERVER_NAME ...]
set -euo pipefail
out="${1:?usage: gen-certs.sh OUT_DIR [SERVER_NAME ...]}"; shift || true
names=("${@:-localhost}")
mkdir -p "$out" && cd "$out"
san=$(printf 'DNS:%s,' "${names[@]}"); san="${san%,},IP:127.0.0.1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -subj "/CN=Cordon Lab CA" -keyout ca.key -out ca.pem 2>/dev/null
issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 397 \
    -extfile <(printf '%s\n' "$3") -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}
issue server "/CN=${names[0]}" "subjectAltName=$san
extendedKeyUsage=serverAuth"
issue client "/CN=cordon-gateway" "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
echo "wrote $(pwd): ca.pem, server.pem/.key (${names[*]}), client.pem/.key"
