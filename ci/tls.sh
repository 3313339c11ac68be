#!/usr/bin/env bash
# Makes throw-away TLS material for the tests, with `openssl`, valid for
# 127.0.0.1 only:
#
#   ci/tls.sh DIR
#
# DIR then holds (PEM files; keys unencrypted unless named otherwise):
#
#   ca.pem, ca-key.pem                  the test CA
#   server.pem, server-key.pem          server certificate (SAN IP:127.0.0.1, DNS:localhost)
#   client.pem, client-key.pem          client certificate (CN locks-test-client)
#   client-key-encrypted.pem            the same client key, encrypted (PKCS#8, AES-256);
#                                       its password is in client-key.password
#   other-ca.pem                        an unrelated CA: verifying the server with it fails
#   expired.pem, expired-key.pem        a server certificate of the test CA that expired in 2020
#   wrong-host.pem, wrong-host-key.pem  a server certificate of the test CA for `wrong.invalid` only
#   server-bundle.pem                   server.pem followed by server-key.pem (servers that want one file)
#
# Nothing is made twice: an existing DIR/ca.pem is kept. Every step is
# bounded; a failing step prints openssl's log and exits non-zero.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
log() { echo "tls.sh: $*" >&2; }
command -v openssl >/dev/null || { log "needs \`openssl\` (run ci/install.sh)"; exit 1; }
mkdir -p "$dir"
[ -s "$dir/ca.pem" ] && [ -s "$dir/expired.pem" ] && exit 0

# Signs $1.csr with the test CA into $1.pem, with extensions $2, between
# $3 and $4 (openssl `ca` dates, YYYYMMDDHHMMSSZ) when given.
sign() {
    local name=$1 ext=$2 start=${3:-} end=${4:-}
    printf '%b' "$ext" >"$name.ext"
    if [ -n "$start" ]; then
        # `openssl x509 -req` cannot back-date; `openssl ca` can.
        mkdir -p ca-db && : >ca-db/index.txt
        [ -f ca-db/serial ] || echo 1000 >ca-db/serial
        cat >ca.cnf <<EOF
[ca]
default_ca = test
[test]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
EOF
        openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca-key.pem -in "$name.csr" \
            -startdate "$start" -enddate "$end" -extfile "$name.ext" -out "$name.pem" -notext
    else
        openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3 \
            -sha256 -extfile "$name.ext" -out "$name.pem"
    fi
}

request() {
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1-key.pem" -out "$1.csr"
}

(
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=locks-test-ca" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout ca-key.pem -out ca.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=locks-other-ca" \
        -addext basicConstraints=critical,CA:TRUE -keyout other-ca-key.pem -out other-ca.pem

    server_ext='subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n'
    request server 127.0.0.1
    sign server "$server_ext"
    cat server.pem server-key.pem >server-bundle.pem

    request client locks-test-client
    sign client 'extendedKeyUsage=clientAuth\n'
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >client-key.password
    openssl pkcs8 -topk8 -v2 aes-256-cbc -in client-key.pem -out client-key-encrypted.pem \
        -passout "file:client-key.password"

    request wrong-host wrong.invalid
    sign wrong-host 'subjectAltName=DNS:wrong.invalid\nextendedKeyUsage=serverAuth\n'

    request expired 127.0.0.1
    sign expired "$server_ext" 20200101000000Z 20200102000000Z
    chmod 600 ./*-key.pem client-key-encrypted.pem client-key.password
) >"$dir/openssl.log" 2>&1 || { log "making certificates in $dir failed:"; tail -30 "$dir/openssl.log" >&2; exit 1; }
log "TLS material for 127.0.0.1 in $dir"
