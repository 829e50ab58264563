#!/usr/bin/env bash
# Baseline for the PKI benchmark: the steps of Istio's tools/certs Makefile, with the openssl
# CLI, for one root and N intermediates. Usage: istio_certs_openssl.sh DIR ALGORITHM CLUSTER...
# ALGORITHM: rsa4096 | ecdsa-p256. Written for this benchmark; not used by the collection.
set -euo pipefail
dir=$1 algorithm=$2
shift 2
mkdir -p "$dir"
cd "$dir"

genkey() {
  case $algorithm in
    rsa4096) openssl genrsa -out "$1" 4096 2>/dev/null ;;
    ecdsa-p256) openssl ecparam -name prime256v1 -genkey -noout -out "$1" ;;
  esac
}

cat > root-ca.conf <<CONF
[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
[ req_dn ]
O = Istio
CN = Root CA
CONF

genkey root-key.pem
openssl req -sha256 -new -key root-key.pem -config root-ca.conf -out root-cert.csr
openssl x509 -req -sha256 -days 3650 -signkey root-key.pem -extensions req_ext -extfile root-ca.conf \
  -in root-cert.csr -out root-cert.pem 2>/dev/null

for cluster in "$@"; do
  mkdir -p "$cluster"
  cat > "$cluster/intermediate.conf" <<CONF
[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
subjectAltName=@san
[ san ]
DNS.1 = istiod.istio-system.svc
[ req_dn ]
O = Istio
CN = Intermediate CA
L = $cluster
CONF
  genkey "$cluster/ca-key.pem"
  openssl req -new -config "$cluster/intermediate.conf" -key "$cluster/ca-key.pem" -out "$cluster/cluster-ca.csr"
  openssl x509 -req -sha256 -days 730 -CA root-cert.pem -CAkey root-key.pem -CAcreateserial \
    -extensions req_ext -extfile "$cluster/intermediate.conf" \
    -in "$cluster/cluster-ca.csr" -out "$cluster/ca-cert.pem" 2>/dev/null
  cat "$cluster/ca-cert.pem" root-cert.pem > "$cluster/cert-chain.pem"
  cp root-cert.pem "$cluster/root-cert.pem"
done
