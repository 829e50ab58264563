#!/usr/bin/env bash
# Baseline for the site benchmark: the steps of Istio's multi-primary, multi-network docs done by
# hand with kubectl and istioctl, for the clusters of the test bed. No idempotence, no checks:
# what an operator would paste. Runs inside the test bed (clusters.sh exec -- site_script.sh N DIR).
# Usage: site_script.sh N WORKDIR
set -euo pipefail
n=$1 work=$2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
clusters=$(seq -f 'cluster%g' 1 "$n")
mkdir -p "$work"

# Certificates as Istio's tools/certs Makefile makes them.
"$here/istio_certs_openssl.sh" "$work/certs" ecdsa-p256 $clusters >/dev/null

i=0
for c in $clusters; do
  i=$((i + 1)); net="network$(( (i - 1) % 2 + 1 ))"
  kubectl --context "$c" create namespace istio-system --dry-run=client -o yaml | kubectl --context "$c" apply -f - >/dev/null
  kubectl --context "$c" label namespace istio-system "topology.istio.io/network=$net" --overwrite >/dev/null
  kubectl --context "$c" -n istio-system create secret generic cacerts \
    --from-file="$work/certs/$c/ca-cert.pem" --from-file="$work/certs/$c/ca-key.pem" \
    --from-file="$work/certs/$c/root-cert.pem" --from-file="$work/certs/$c/cert-chain.pem" \
    --dry-run=client -o yaml | kubectl --context "$c" apply -f - >/dev/null
  cat >"$work/$c.yaml" <<YAML
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  values:
    global:
      meshID: mesh1
      multiCluster:
        clusterName: $c
      network: $net
YAML
  istioctl install -y --context "$c" -f "$work/$c.yaml" >/dev/null
  cat >"$work/$c-eastwest.yaml" <<YAML
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: eastwest
spec:
  profile: empty
  components:
    ingressGateways:
      - name: istio-eastwestgateway
        label:
          istio: eastwestgateway
          app: istio-eastwestgateway
          topology.istio.io/network: $net
        enabled: true
        k8s:
          env:
            - name: ISTIO_META_REQUESTED_NETWORK_VIEW
              value: $net
          service:
            ports:
              - {name: status-port, port: 15021, targetPort: 15021}
              - {name: tls, port: 15443, targetPort: 15443}
              - {name: tls-istiod, port: 15012, targetPort: 15012}
              - {name: tls-webhook, port: 15017, targetPort: 15017}
  values:
    gateways:
      istio-ingressgateway:
        injectionTemplate: gateway
    global:
      network: $net
YAML
  istioctl install -y --context "$c" -f "$work/$c-eastwest.yaml" >/dev/null
  kubectl --context "$c" apply -n istio-system -f - >/dev/null <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network-gateway
spec:
  selector:
    istio: eastwestgateway
  servers:
    - port: {number: 15443, name: tls, protocol: TLS}
      tls: {mode: AUTO_PASSTHROUGH}
      hosts: ["*.local"]
YAML
done

for watched in $clusters; do
  for watcher in $clusters; do
    [ "$watched" = "$watcher" ] && continue
    istioctl create-remote-secret --context "$watched" --name "$watched" | kubectl --context "$watcher" apply -f - >/dev/null
  done
done
