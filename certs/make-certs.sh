#!/usr/bin/env bash
# Makes the test PKI in a directory (default certs/out, never committed):
#   ca.pem / ca.key          test CA
#   server.pem / server.key  broker certificate for localhost and 127.0.0.1, signed by the CA
#   client.pem / client.key  client certificate (mTLS), signed by the CA
#   other-ca.pem             an unrelated CA, for "untrusted CA" tests
# Keys are EC P-256, PKCS#8 PEM. Requires openssl.
set -euo pipefail
out="${1:-$(dirname "$0")/out}"
mkdir -p "$out"
cd "$out"
days=30
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days $days -subj "/CN=meshbus test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem

key server.key
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 -extfile server.ext -out server.pem 2>/dev/null

key client.key
openssl req -new -key client.key -subj "/CN=meshbus-client" -out client.csr
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 -extfile client.ext -out client.pem 2>/dev/null

key other-ca.key
openssl req -x509 -new -key other-ca.key -sha256 -days $days -subj "/CN=unrelated CA" \
  -addext "basicConstraints=critical,CA:TRUE" -out other-ca.pem
rm -f ./*.csr ./*.ext ./*.srl
echo "$out"
