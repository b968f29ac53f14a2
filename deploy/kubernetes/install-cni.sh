#!/bin/sh
# Init container step: install weir-cni and this node's CNI config.
# Idempotent; writes the config last so the runtime never sees a config
# whose plugin binary is missing.
set -eu
: "${NODE_NAME:?NODE_NAME must be set from spec.nodeName}"
TOKEN=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)
CA=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt
API="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}"
POD_CIDR=$(wget -q -O- --header "Authorization: Bearer ${TOKEN}" --ca-certificate "${CA}" \
  "${API}/api/v1/nodes/${NODE_NAME}" | sed -n 's/.*"podCIDR": *"\([^"]*\)".*/\1/p' | head -n1)
[ -n "${POD_CIDR}" ] || { echo "node ${NODE_NAME} has no spec.podCIDR" >&2; exit 1; }
install -m 0755 /usr/local/bin/weir-cni /host/opt/cni/bin/weir-cni.tmp
mv /host/opt/cni/bin/weir-cni.tmp /host/opt/cni/bin/weir-cni
sed "s#__POD_CIDR__#${POD_CIDR}#" /etc/weir/cni/10-weir.conflist > /host/etc/cni/net.d/.10-weir.conflist.tmp
mv /host/etc/cni/net.d/.10-weir.conflist.tmp /host/etc/cni/net.d/10-weir.conflist
echo "installed weir-cni for ${NODE_NAME} (podCIDR ${POD_CIDR})"
