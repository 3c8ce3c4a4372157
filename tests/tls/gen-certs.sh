#!/usr/bin/env bash
# Generates the certificates of keel's TLS tests into OUTDIR with the
# openssl command (OpenSSL 3.0's CLI) and nothing else. The build runs it
# (tests/tls/meson.build: the files land in BUILD/tests/tls/) and
# gives the directory to every test as KEEL_TEST_CERTS. No key is ever
# committed: they exist only where this script writes them.
#
#   tests/tls/gen-certs.sh OUTDIR
#
# Files (each NAME.pem is a certificate, NAME.key its private key, PKCS#8
# PEM, mode 0600):
#   ca.pem / ca.key                  the test CA (ECDSA P-256, CN=keel test CA),
#                                    valid for 10 years from now
#   server.pem / server.key          ECDSA P-256, CN=localhost, subjectAltName
#                                    DNS:localhost, IP:127.0.0.1, IP:::1;
#                                    EKU serverAuth; signed by the CA
#   server-ed25519.pem / .key        Ed25519, the same names and EKU, signed by
#                                    the CA (its signatures have a fixed
#                                    length, so lab runs replay byte for byte)
#   other.pem / other.key            ECDSA P-256, CN=other.test, DNS:other.test,
#                                    DNS:*.wild.test; serverAuth; by the CA
#                                    (the second certificate, chosen by SNI)
#   wronghost.pem / wronghost.key    ECDSA P-256, CN=wrong.test, DNS:wrong.test
#                                    only; serverAuth; by the CA
#   expired.pem / expired.key        ECDSA P-256, for localhost (the same names
#                                    as server.pem), by the CA, valid from
#                                    2020-01-01 to 2020-02-01 only
#   selfsigned.pem / selfsigned.key  ECDSA P-256, for localhost, self-signed
#                                    (not by the CA)
#   client.pem / client.key          ECDSA P-256, CN=keel-test-client; EKU
#                                    clientAuth; by the CA (mutual TLS)
#   server-chain.pem                 server.pem then ca.pem (a leaf with its
#                                    chain, for peers that want one file)
#
# Every run writes the whole set afresh into a directory of its own and then
# moves it into OUTDIR, so a run over an existing OUTDIR (or one that was
# interrupted) leaves a complete, consistent set. OPENSSL names the openssl
# command (default: the one on PATH).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
openssl=${OPENSSL:-openssl}
command -v "$openssl" >/dev/null 2>&1 || {
  echo "$0: the openssl command is not installed (Debian package openssl; tools/setup installs it)" >&2
  exit 1
}

umask 077
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d "$out/.gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

days=3650
localhost_san='DNS:localhost,IP:127.0.0.1,IP:::1'

# ossl ARGS...: openssl, quiet unless it fails.
ossl() {
  local log
  if ! log=$("$openssl" "$@" 2>&1); then
    echo "$0: openssl $* failed:" >&2
    echo "$log" >&2
    exit 1
  fi
}

# key NAME [ed25519]: NAME.key, an ECDSA P-256 key (or Ed25519).
key() {
  if [ "${2:-}" = ed25519 ]; then
    ossl genpkey -algorithm ED25519 -out "$1.key"
  else
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
      -out "$1.key"
  fi
}

# ext_file NAME SAN EKU: the X.509v3 extensions of a leaf, for openssl x509
# -extfile and openssl ca -extfile (section "leaf").
ext_file() {
  {
    echo '[leaf]'
    echo 'basicConstraints = critical, CA:FALSE'
    echo 'subjectKeyIdentifier = hash'
    echo 'authorityKeyIdentifier = keyid, issuer'
    if [ "$3" = clientAuth ]; then
      echo 'keyUsage = critical, digitalSignature'
    else
      echo 'keyUsage = critical, digitalSignature, keyEncipherment'
    fi
    echo "extendedKeyUsage = $3"
    [ -z "$2" ] || echo "subjectAltName = $2"
  } >"$1.ext"
}

# leaf NAME KEYTYPE CN SAN EKU: NAME.key and NAME.pem signed by the CA.
leaf() {
  local name=$1 keytype=$2 cn=$3 san=$4 eku=$5
  key "$name" "$keytype"
  ext_file "$name" "$san" "$eku"
  ossl req -new -key "$name.key" -subj "/O=keel tests/CN=$cn" -out "$name.csr"
  ossl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -sha256 -extfile "$name.ext" -extensions leaf -out "$name.pem"
}

# The CA.
key ca
ossl req -new -x509 -key ca.key -sha256 -days "$days" -subj '/O=keel tests/CN=keel test CA' \
  -addext 'basicConstraints = critical, CA:TRUE' \
  -addext 'keyUsage = critical, keyCertSign, cRLSign' \
  -addext 'subjectKeyIdentifier = hash' -out ca.pem

leaf server ec localhost "$localhost_san" serverAuth
leaf server-ed25519 ed25519 localhost "$localhost_san" serverAuth
leaf other ec other.test 'DNS:other.test,DNS:*.wild.test' serverAuth
leaf wronghost ec wrong.test 'DNS:wrong.test' serverAuth
leaf client ec keel-test-client '' clientAuth

# Expired: openssl x509 -req cannot date a certificate in the past (3.0), so
# openssl ca signs it with explicit dates, from a minimal configuration of
# its own (its database and serial in this directory).
key expired
ext_file expired "$localhost_san" serverAuth
ossl req -new -key expired.key -subj '/O=keel tests/CN=localhost' -out expired.csr
mkdir ca-db
: >ca-db/index.txt
echo 1000 >ca-db/serial
cat >ca.cnf <<'EOF'
[ca]
default_ca = test_ca
[test_ca]
dir = ./ca-db
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir
default_md = sha256
policy = any_policy
unique_subject = no
copy_extensions = none
[any_policy]
organizationName = optional
commonName = supplied
EOF
ossl ca -batch -notext -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
  -startdate 20200101000000Z -enddate 20200201000000Z -extfile expired.ext -extensions leaf \
  -out expired.pem

# Self-signed, for localhost, not by the CA.
key selfsigned
ossl req -new -x509 -key selfsigned.key -sha256 -days "$days" -subj '/O=keel tests/CN=localhost' \
  -addext 'basicConstraints = critical, CA:FALSE' \
  -addext "subjectAltName = $localhost_san" \
  -addext 'extendedKeyUsage = serverAuth' -out selfsigned.pem

cat server.pem ca.pem >server-chain.pem

# Certificates are public: readable by all; keys stay 0600.
names=(ca server server-ed25519 other wronghost expired selfsigned client)
for name in "${names[@]}"; do
  chmod 0644 "$name.pem"
  chmod 0600 "$name.key"
done
chmod 0644 server-chain.pem

# The checks a test would otherwise trip over later, with a less clear
# message: each certificate verifies (or fails) as intended.
verify() {
  "$openssl" verify -CAfile ca.pem "$@" 2>&1
}
for name in server server-ed25519 other wronghost; do
  verify -purpose sslserver "$name.pem" >/dev/null || {
    echo "$0: $name.pem does not verify against ca.pem: $(verify "$name.pem")" >&2
    exit 1
  }
done
verify -purpose sslclient client.pem >/dev/null || {
  echo "$0: client.pem does not verify against ca.pem: $(verify client.pem)" >&2
  exit 1
}
verify -verify_hostname localhost server.pem >/dev/null ||
  { echo "$0: server.pem is not valid for localhost" >&2; exit 1; }
verify -verify_ip 127.0.0.1 server.pem >/dev/null ||
  { echo "$0: server.pem is not valid for 127.0.0.1" >&2; exit 1; }
verify -verify_hostname a.wild.test other.pem >/dev/null ||
  { echo "$0: other.pem is not valid for a.wild.test" >&2; exit 1; }
why=$(verify expired.pem) && why='it verifies'
[[ $why == *'certificate has expired'* ]] ||
  { echo "$0: expired.pem is not reported expired: $why" >&2; exit 1; }
! verify selfsigned.pem >/dev/null ||
  { echo "$0: selfsigned.pem verifies against the CA" >&2; exit 1; }

# Into place, each file by rename (atomic): a reader sees an old file or a
# new one, never half of one.
for name in "${names[@]}"; do
  mv -f "$name.key" "$out/$name.key"
  mv -f "$name.pem" "$out/$name.pem"
done
mv -f server-chain.pem "$out/server-chain.pem"
