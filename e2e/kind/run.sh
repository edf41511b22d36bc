#!/usr/bin/env bash
# End-to-end suite on a throwaway kind cluster: build the operator, worker and server images, load
# them into kind, run Redis and the server in the cluster, install the Helm chart, then run the
# cluster-agnostic pytest scenarios under e2e/ with the cluster's kubeconfig.
#
#   e2e/kind/run.sh [pytest args...]
#
# Environment: KIND_CLUSTER (codetether-e2e), E2E_IMAGE_TAG (e2e), KEEP_CLUSTER=1 keeps the cluster,
# PYTHON (the repository's .venv python), KUBECTL (kubectl from PATH or the .venv).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
cluster="${KIND_CLUSTER:-codetether-e2e}"
tag="${E2E_IMAGE_TAG:-e2e}"
pool_namespace="codetether-e2e"
operator_namespace="codetether-system"
python="${PYTHON:-${root}/.venv/bin/python}"
kubeconfig="${here}/.kubeconfig"

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "run.sh needs '$1' on PATH" >&2
    exit 2
  fi
}
need docker
need kind
if [[ -n "${KUBECTL:-}" ]]; then
  kubectl_bin="${KUBECTL}"
elif command -v kubectl >/dev/null 2>&1; then
  kubectl_bin="$(command -v kubectl)"
else
  kubectl_bin="${root}/.venv/bin/kubectl"
fi
[[ -x "${python}" ]] || { echo "no python at ${python}: run 'make venv' or set PYTHON" >&2; exit 2; }

k() { "${kubectl_bin}" --kubeconfig "${kubeconfig}" "$@"; }

cleanup() {
  local status=$?
  if [[ ${status} -ne 0 && -f "${kubeconfig}" ]]; then
    echo "--- operator logs" >&2
    k -n "${operator_namespace}" logs deployment/codetether-operator --tail=200 >&2 || true
    echo "--- pods" >&2
    k get pods -A -o wide >&2 || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" != "1" ]]; then
    kind delete cluster --name "${cluster}" >/dev/null 2>&1 || true
    rm -f "${kubeconfig}"
  else
    echo "cluster ${cluster} kept; kubeconfig: ${kubeconfig}"
  fi
  exit "${status}"
}
trap cleanup EXIT

if ! kind get clusters 2>/dev/null | grep -qx "${cluster}"; then
  kind create cluster --name "${cluster}" --config "${here}/kind-config.yaml" --wait 180s
fi
kind get kubeconfig --name "${cluster}" >"${kubeconfig}"

operator_image="codetether-operator:${tag}"
worker_image="codetether-worker:${tag}"
server_image="codetether-server:${tag}"
docker build -f "${root}/Dockerfile.operator" -t "${operator_image}" "${root}"
docker build -f "${root}/Dockerfile.worker" -t "${worker_image}" "${root}"
docker build -f "${here}/Dockerfile.server" -t "${server_image}" "${root}"
for image in "${operator_image}" "${worker_image}" "${server_image}"; do
  kind load docker-image --name "${cluster}" "${image}"
done

k apply -f "${here}/manifests/namespace.yaml"
k apply -f "${here}/manifests/redis.yaml" -f "${here}/manifests/server.yaml"
k -n "${pool_namespace}" set image deployment/codetether-server "server=${server_image}"
k -n "${pool_namespace}" rollout status deployment/redis --timeout=180s
k -n "${pool_namespace}" rollout status deployment/codetether-server --timeout=180s

"${python}" "${here}/install_chart.py" \
  --kubeconfig "${kubeconfig}" \
  --namespace "${operator_namespace}" \
  --operator-image "${operator_image}" \
  --pool-namespace "${pool_namespace}"
k -n "${operator_namespace}" rollout status deployment/codetether-operator --timeout=180s

E2E_KUBECONFIG="${kubeconfig}" \
E2E_NAMESPACE="${pool_namespace}" \
E2E_OPERATOR_NAMESPACE="${operator_namespace}" \
E2E_WORKER_IMAGE="${worker_image}" \
E2E_WORKER_SERVICE_ACCOUNT="codetether-worker" \
KUBECTL="${kubectl_bin}" \
  "${python}" -m pytest -p no:cacheprovider -v "${root}/e2e" "$@"
