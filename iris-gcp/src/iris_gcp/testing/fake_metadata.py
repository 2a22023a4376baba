"""A fake GCE metadata server: what ``http://metadata.google.internal/computeMetadata/v1``
answers on a machine, for many fake machines at once.

Each host has its own URL prefix, ``http://127.0.0.1:PORT/<instance>/computeMetadata/v1``
(:meth:`FakeMetadataServer.url`), which a fake machine gets as ``IRIS_METADATA_URL``. Like the
real server, every request needs the header ``Metadata-Flavor: Google`` (403 without it), and
every answer carries it. Served per host:

- ``instance/attributes/`` (the key list, one per line; ``?recursive=true``: a JSON object)
  and ``instance/attributes/KEY`` (404 if absent);
- ``instance/name``, ``instance/hostname``, ``instance/id``, ``instance/zone``
  (``projects/<number>/zones/<zone>``), ``instance/network-interfaces/0/ip``,
  ``instance/labels`` is not a real path and is not served;
- ``project/project-id``, ``project/numeric-project-id``;
- guest attributes: ``PUT instance/guest-attributes/NAMESPACE/KEY`` stores a value the machine
  reports (``GET`` reads it back; :meth:`FakeMetadataServer.guest_attributes` for tests).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import attrs

PREFIX = "computeMetadata/v1"
PROJECT_NUMBER = "123456789012"


@attrs.define
class _Machine:
    name: str
    attributes: dict[str, str]
    ip: str
    zone: str
    project: str
    labels: dict[str, str]
    guest: dict[str, str] = attrs.field(factory=dict)

    def answer(self, path: str) -> str | None:
        """The text for ``path`` (below ``computeMetadata/v1/``), or None when there is none."""
        if path.startswith("instance/attributes/"):
            key = path[len("instance/attributes/") :]
            return self.attributes.get(key)
        if path.startswith("instance/guest-attributes/"):
            return self.guest.get(path[len("instance/guest-attributes/") :])
        fixed = {
            "instance/name": self.name,
            "instance/hostname": f"{self.name}.{self.zone}.c.{self.project}.internal",
            "instance/id": str(zlib.crc32(self.name.encode())),
            "instance/zone": f"projects/{PROJECT_NUMBER}/zones/{self.zone}",
            "instance/network-interfaces/0/ip": self.ip,
            "project/project-id": self.project,
            "project/numeric-project-id": PROJECT_NUMBER,
        }
        return fixed.get(path)


class FakeMetadataServer:
    """The metadata server of every fake machine, on ``127.0.0.1`` (``host``) and a free port.

    Use as a context manager or ``start()``/``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Lock()
        self._machines: dict[str, _Machine] = {}
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeMetadataServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="fake-metadata", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeMetadataServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- machines ----------------------------------------------------------------------------

    def add(
        self,
        name: str,
        attributes: Mapping[str, str],
        *,
        ip: str,
        zone: str = "us-central2-b",
        project: str = "iris-fake-project",
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Serve a machine's metadata; returns its URL prefix (:meth:`url`)."""
        if not name or "/" in name:
            raise ValueError(f"metadata machine name {name!r}: accepted: a non-empty name without '/'")
        with self._lock:
            self._machines[name] = _Machine(name, dict(attributes), ip, zone, project, dict(labels or {}))
        return self.url(name)

    def remove(self, name: str) -> None:
        with self._lock:
            self._machines.pop(name, None)

    def set_attribute(self, name: str, key: str, value: str | None) -> None:
        """Change (or with None, delete) one attribute, as ``gcloud ... add-metadata`` would."""
        with self._lock:
            machine = self._machines[name]
            if value is None:
                machine.attributes.pop(key, None)
            else:
                machine.attributes[key] = value

    def set_attributes(self, name: str, attributes: Mapping[str, str]) -> None:
        """Replace every attribute of a machine (``instances.setMetadata``)."""
        with self._lock:
            self._machines[name].attributes = dict(attributes)

    def guest_attributes(self, name: str) -> dict[str, str]:
        """What the machine reported (``NAMESPACE/KEY`` to value)."""
        with self._lock:
            machine = self._machines.get(name)
            return dict(machine.guest) if machine else {}

    def url(self, name: str) -> str:
        """The machine's ``computeMetadata/v1`` URL (what it gets as ``IRIS_METADATA_URL``)."""
        return f"http://{self.address}/{name}/{PREFIX}"

    # --- HTTP --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _send(self, code: int, body: str, content_type: str = "application/text") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _resolve(self) -> tuple[_Machine, str, dict[str, list[str]]] | None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._send(403, "Missing Metadata-Flavor:Google header.\n", "text/html")
                    return None
                parts = urlsplit(self.path)
                name, _, rest = parts.path.lstrip("/").partition("/")
                with server._lock:
                    machine = server._machines.get(name)
                if machine is None or not (rest == PREFIX or rest.startswith(PREFIX + "/")):
                    self._send(404, "Not Found\n", "text/html")
                    return None
                return machine, rest[len(PREFIX) :].strip("/"), parse_qs(parts.query)

            def do_GET(self) -> None:  # noqa: N802
                resolved = self._resolve()
                if resolved is None:
                    return
                machine, path, query = resolved
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                with server._lock:
                    if path == "instance/attributes":
                        if recursive:
                            self._send(200, json.dumps(machine.attributes), "application/json")
                        else:
                            self._send(200, "".join(f"{k}\n" for k in sorted(machine.attributes)))
                        return
                    text = machine.answer(path)
                if text is None:
                    self._send(404, "Not Found\n", "text/html")
                else:
                    self._send(200, text)

            def do_PUT(self) -> None:  # noqa: N802
                resolved = self._resolve()
                if resolved is None:
                    return
                machine, path, _ = resolved
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                key = path[len("instance/guest-attributes/") :] if path.startswith("instance/guest-attributes/") else ""
                if key.count("/") != 1 or not all(key.split("/")):
                    self._send(400, "guest attributes are written at instance/guest-attributes/NAMESPACE/KEY\n")
                    return
                with server._lock:
                    machine.guest[key] = body
                self._send(200, "")

        return Handler
