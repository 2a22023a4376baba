"""What a GCP machine runs at boot, and the metadata that tells it what to be.

The contract between the provider (which creates TPU nodes and the controller instance) and the
machine is the instance metadata: the provider sets the keys below, and one startup script,
rendered from one template for both roles, reads them from the metadata server
(``$IRIS_METADATA_URL``, default ``http://metadata.google.internal/computeMetadata/v1``) and
starts Iris in a container from ``iris-image``:

- every role: ``startup-script`` (:func:`startup_script`), ``iris-role`` (``worker`` or
  ``controller``), ``iris-image``;
- workers: ``iris-controller-address`` (the controller URL as workers reach it) and
  ``iris-worker`` (JSON: slice id, scale group, attributes, runtime, capacity, task image, and a
  credential per worker index); on a multi-host TPU slice each host reads its index from the
  TPU's own ``agent-worker-number`` key and runs worker ``<slice id>-w<index>``;
- the controller: ``iris-config`` (the cluster config YAML, written to ``/etc/iris/config.yaml``
  and mounted read-only into the controller container, which gets ``--config`` it, as seed 002
  decided) and ``iris-controller-port``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

STARTUP_SCRIPT = "startup-script"
ROLE = "iris-role"
IMAGE = "iris-image"
CONTROLLER_ADDRESS = "iris-controller-address"
WORKER = "iris-worker"
CONFIG = "iris-config"
CONTROLLER_PORT = "iris-controller-port"
WORKER_INDEX = "agent-worker-number"  # set by the TPU service on each host of a slice

ROLES = ("worker", "controller")

#: The label the startup script puts on the container it starts (value: the instance name).
LABEL_INSTANCE = "iris.instance"
#: The file under ``IRIS_ROOT`` where the startup script reports its state
#: (``pulling``, ``starting``, ``running``, ``failed: ...``); also the guest attribute
#: ``iris/startup-state``.
STATE_FILE = "startup-state"


def worker_id(slice_id: str, index: int) -> str:
    """The id of the worker on host ``index`` of a slice."""
    return f"{slice_id}-w{index}"


def worker_metadata(
    *,
    image: str,
    controller_address: str,
    slice_id: str,
    scale_group: str,
    attributes: Mapping[str, str],
    runtime: str = "docker",
    task_image: str = "",
    cpu: float = 0.0,
    memory_bytes: int = 0,
    tokens: Mapping[int, str] | None = None,
) -> dict[str, str]:
    """The metadata of every host of a worker slice. ``tokens`` maps a worker index to that
    worker's credential (none: the controller runs without auth)."""
    worker = {
        "slice_id": slice_id,
        "scale_group": scale_group,
        "attributes": dict(attributes),
        "runtime": runtime,
        "task_image": task_image,
        "cpu": cpu,
        "memory_bytes": memory_bytes,
        "tokens": {str(i): t for i, t in (tokens or {}).items()},
    }
    return {
        STARTUP_SCRIPT: startup_script(),
        ROLE: "worker",
        IMAGE: image,
        CONTROLLER_ADDRESS: controller_address,
        WORKER: json.dumps(worker, sort_keys=True),
    }


def controller_metadata(*, image: str, config_yaml: str, port: int) -> dict[str, str]:
    """The metadata of the controller instance."""
    return {
        STARTUP_SCRIPT: startup_script(),
        ROLE: "controller",
        IMAGE: image,
        CONFIG: config_yaml,
        CONTROLLER_PORT: str(port),
    }


def startup_script() -> str:
    """The bash startup script of every Iris machine (both roles; the role comes from metadata).

    What it reads from the machine's environment, for machines that are not plain GCE VMs (the
    fake machines of the tests set them; a real VM has none of them set):
    ``IRIS_METADATA_URL`` (the metadata server), ``IRIS_ROOT`` (default ``/var/lib/iris``: the
    worker's or controller's files, mounted at the same path into its container),
    ``IRIS_CONFIG_DIR`` (default ``/etc/iris``), ``IRIS_SHARED_DIRS`` (``:``-separated directories
    the machine shares with others, e.g. a mounted filesystem holding a ``file://`` bundle store:
    mounted at the same path into the container), ``IRIS_CONTAINER_ENV`` (``KEY=VALUE`` words
    added to the container's environment, e.g. ``STORAGE_EMULATOR_HOST`` for a fake GCS),
    ``IRIS_DOCKER_SOCKET`` (the engine socket's path
    as the engine sees it, default ``/var/run/docker.sock``), ``IRIS_PULL_ATTEMPTS`` (default 5)
    and ``IRIS_HEALTH_SECONDS`` (how long to wait for the container to come up, default 300).
    """
    return _TEMPLATE


_TEMPLATE = r"""#!/bin/bash
# Iris startup script (iris_gcp.bootstrap): reads what this machine is from its metadata and
# starts it in a container. Safe to run again (a reboot runs it again).
set -euo pipefail

METADATA_URL="${IRIS_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
IRIS_ROOT="${IRIS_ROOT:-/var/lib/iris}"
CONFIG_DIR="${IRIS_CONFIG_DIR:-/etc/iris}"
DOCKER_SOCKET="${IRIS_DOCKER_SOCKET:-/var/run/docker.sock}"
PULL_ATTEMPTS="${IRIS_PULL_ATTEMPTS:-5}"
HEALTH_SECONDS="${IRIS_HEALTH_SECONDS:-300}"
STATE_FILE="${IRIS_ROOT}/startup-state"

log() { echo "iris-startup: $*" >&2; }

meta() {  # meta PATH: a metadata value, or empty if absent
  curl -sf --retry 5 --retry-connrefused -H "Metadata-Flavor: Google" "${METADATA_URL}/$1" || true
}

attr() {  # attr KEY: the instance attribute, or empty if absent
  meta "instance/attributes/$1"
}

report() {  # report STATE: where the machine is, for whoever watches it (file and guest attribute)
  mkdir -p "${IRIS_ROOT}"
  echo "$1" > "${STATE_FILE}"
  curl -sf -X PUT --data "$1" -H "Metadata-Flavor: Google" \
    "${METADATA_URL}/instance/guest-attributes/iris/startup-state" >/dev/null 2>&1 || true
  log "state: $1"
}

fail() {
  report "failed: $*"
  exit 1
}

ROLE="$(attr iris-role)"
IMAGE="$(attr iris-image)"
NAME="$(meta instance/name)"
ADDRESS="$(meta instance/network-interfaces/0/ip)"
NAME="${NAME:-$(hostname)}"
if [ -z "${ROLE}" ] || [ -z "${IMAGE}" ]; then
  fail "metadata has no iris-role or iris-image; nothing to start"
fi
case "${ROLE}" in
  worker|controller) ;;
  *) fail "unknown iris-role '${ROLE}' (accepted: worker, controller)" ;;
esac
CONTAINER="iris-${ROLE}-${NAME}"
log "this is ${NAME} (${ADDRESS:-no address}), role ${ROLE}, image ${IMAGE}"

# --- Docker -----------------------------------------------------------------------------------
if ! command -v docker >/dev/null 2>&1; then
  report "installing docker"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; }; then
    fail "could not install docker.io"
  fi
  if command -v systemctl >/dev/null 2>&1; then systemctl enable --now docker || true; fi
fi
docker_up=""
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then docker_up=yes; break; fi
  sleep 1
done
[ -n "${docker_up}" ] || fail "the Docker engine does not answer (docker info)"

# --- the image --------------------------------------------------------------------------------
report "pulling"
pulled=""
for attempt in $(seq 1 "${PULL_ATTEMPTS}"); do
  if docker pull -q "${IMAGE}"; then pulled=yes; break; fi
  log "pull ${attempt}/${PULL_ATTEMPTS} of ${IMAGE} failed"
  if [ "${attempt}" -lt "${PULL_ATTEMPTS}" ]; then sleep $((attempt * 2)); fi
done
if [ -z "${pulled}" ]; then
  docker image inspect "${IMAGE}" >/dev/null 2>&1 || fail "could not pull ${IMAGE}"
  log "using the copy of ${IMAGE} this machine already has"
fi

# --- the container ----------------------------------------------------------------------------
mkdir -p "${IRIS_ROOT}"
run_args=(-d --name "${CONTAINER}" --network host --restart unless-stopped
  --label "iris.instance=${NAME}" --label "iris.role=${ROLE}"
  -v "${IRIS_ROOT}:${IRIS_ROOT}" -e "IRIS_ROOT=${IRIS_ROOT}")
if [ -n "${IRIS_METADATA_URL:-}" ]; then
  run_args+=(-e "IRIS_METADATA_URL=${IRIS_METADATA_URL}")
fi
# directories the machine shares with others (a mounted filesystem), at the same path
shared_dirs=()
if [ -n "${IRIS_SHARED_DIRS:-}" ]; then
  IFS=: read -r -a shared_dirs <<< "${IRIS_SHARED_DIRS}"
fi
for shared in "${shared_dirs[@]}"; do
  run_args+=(-v "${shared}:${shared}")
done
# environment the machine's image gives Iris (KEY=VALUE words, e.g. a storage endpoint)
container_env=()
if [ -n "${IRIS_CONTAINER_ENV:-}" ]; then
  read -r -a container_env <<< "${IRIS_CONTAINER_ENV}"
fi
for assignment in "${container_env[@]}"; do
  run_args+=(-e "${assignment}")
done
docker rm -f "${CONTAINER}" >/dev/null 2>&1 || true
report "starting"

case "${ROLE}" in
  controller)
    PORT="$(attr iris-controller-port)"
    PORT="${PORT:-10000}"
    mkdir -p "${CONFIG_DIR}"
    attr iris-config > "${CONFIG_DIR}/config.yaml"
    [ -s "${CONFIG_DIR}/config.yaml" ] || fail "metadata has no iris-config"
    STATE_DIR="${IRIS_ROOT}/controller"
    mkdir -p "${STATE_DIR}"
    rm -f "${STATE_DIR}/controller.url"
    docker run "${run_args[@]}" \
      -v "${CONFIG_DIR}/config.yaml:/etc/iris/config.yaml:ro" \
      --entrypoint python3 "${IMAGE}" -m iris.cluster.controller.main serve \
      --config /etc/iris/config.yaml --host "${ADDRESS:-0.0.0.0}" --port "${PORT}" \
      --state-dir "${STATE_DIR}" >/dev/null || fail "docker run of the controller failed"
    READY="${STATE_DIR}/controller.url"
    ;;
  worker)
    # the worker reaches the package index (task environments) with this machine's CA certificates
    if [ -d /etc/ssl/certs ]; then
      run_args+=(-v /etc/ssl/certs:/etc/ssl/certs:ro -e SSL_CERT_DIR=/etc/ssl/certs)
      if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        run_args+=(-e SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
      fi
    fi
    docker run "${run_args[@]}" \
      -v "${DOCKER_SOCKET}:/var/run/docker.sock" \
      --entrypoint python3 "${IMAGE}" -m iris_gcp.boot worker >/dev/null \
      || fail "docker run of the worker failed"
    READY="${IRIS_ROOT}/worker/worker.ready"
    ;;
esac

# --- health -----------------------------------------------------------------------------------
for _ in $(seq 1 "${HEALTH_SECONDS}"); do
  if [ -e "${READY}" ]; then
    report "running"
    log "the ${ROLE} runs in container ${CONTAINER}"
    exit 0
  fi
  if [ "$(docker inspect -f '{{.State.Running}}' "${CONTAINER}" 2>/dev/null)" != "true" ]; then
    docker logs --tail 20 "${CONTAINER}" >&2 2>&1 || true
    fail "the ${ROLE} container ${CONTAINER} stopped"
  fi
  sleep 1
done
docker logs --tail 20 "${CONTAINER}" >&2 2>&1 || true
fail "the ${ROLE} did not come up within ${HEALTH_SECONDS}s"
"""
