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
    """The bash startup script of every Iris machine (both roles; the role comes from metadata)."""
    return _TEMPLATE


_TEMPLATE = r"""#!/bin/bash
# Iris startup script (iris_gcp.bootstrap): reads what this machine is from its metadata and
# starts it in a container. Safe to run again (a reboot runs it again).
set -euo pipefail

METADATA_URL="${IRIS_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
IRIS_ROOT="${IRIS_ROOT:-/var/lib/iris}"

log() { echo "iris-startup: $*" >&2; }

attr() {  # attr KEY: the instance attribute, or empty if absent
  curl -sf -H "Metadata-Flavor: Google" "${METADATA_URL}/instance/attributes/$1" || true
}

ROLE="$(attr iris-role)"
IMAGE="$(attr iris-image)"
if [ -z "${ROLE}" ] || [ -z "${IMAGE}" ]; then
  log "metadata has no iris-role or iris-image; nothing to start"
  exit 1
fi

if ! command -v docker >/dev/null 2>&1; then
  log "installing Docker"
  apt-get update -q && apt-get install -y -q docker.io
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  sleep 1
done

log "pulling ${IMAGE}"
for attempt in 1 2 3 4 5; do
  docker pull "${IMAGE}" && break
  [ "${attempt}" = 5 ] && { log "could not pull ${IMAGE}"; exit 1; }
  sleep $((attempt * 2))
done

mkdir -p "${IRIS_ROOT}"
metadata_env=()
if [ -n "${IRIS_METADATA_URL:-}" ]; then
  metadata_env=(-e "IRIS_METADATA_URL=${IRIS_METADATA_URL}")
fi

case "${ROLE}" in
  controller)
    mkdir -p /etc/iris
    attr iris-config > /etc/iris/config.yaml
    docker rm -f iris-controller >/dev/null 2>&1 || true
    docker run -d --name iris-controller --network host --restart unless-stopped \
      -v /etc/iris/config.yaml:/etc/iris/config.yaml:ro \
      -v "${IRIS_ROOT}:${IRIS_ROOT}" \
      "${IMAGE}" serve --config /etc/iris/config.yaml --state-dir "${IRIS_ROOT}/controller"
    ;;
  worker)
    docker rm -f iris-worker >/dev/null 2>&1 || true
    docker run -d --name iris-worker --network host --restart unless-stopped \
      -v /var/run/docker.sock:/var/run/docker.sock \
      -v "${IRIS_ROOT}:${IRIS_ROOT}" \
      -e "IRIS_ROOT=${IRIS_ROOT}" "${metadata_env[@]}" \
      --entrypoint python3 "${IMAGE}" -m iris_gcp.boot worker
    ;;
  *)
    log "unknown iris-role '${ROLE}' (accepted: worker, controller)"
    exit 1
    ;;
esac
log "started the ${ROLE}"
"""
