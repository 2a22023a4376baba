"""A local fake of Google Cloud Storage's JSON API, for tests: the real ``google-cloud-storage``
client talks to it over HTTP on 127.0.0.1 (set ``STORAGE_EMULATOR_HOST`` to :attr:`FakeGcs.url`).

It serves the subset the client uses for what Iris does, and keeps what real GCS guarantees there:

- buckets: create, get; objects: get metadata, download (``alt=media``, with ``Range``), delete, list
  by prefix;
- uploads: ``multipart`` (small objects) and ``resumable`` sessions (large ones: the client sends
  chunks with ``Content-Range`` and the fake answers ``308`` with the bytes it has, until the last);
- generations: every write of an object makes a new generation; ``ifGenerationMatch`` (``0`` = only
  if absent) and ``ifGenerationNotMatch`` are checked on writes, reads and deletes, answering
  ``412`` when they fail, so two writers cannot clobber each other;
- checksums: every object carries its ``md5Hash`` and ``crc32c`` and downloads send them in
  ``X-Goog-Hash``, as GCS does, so the client's own verification runs; a multipart upload whose
  declared ``crc32c`` does not match its bytes is refused (``400``);
- errors in GCS's JSON shape (``404`` for a missing bucket or object, ``403`` for a bucket the test
  denied with :meth:`FakeGcs.deny`).

What it does not prove: authentication and IAM (every caller is anonymous; ``deny`` only imitates a
refusal), object ACLs, retention, lifecycle rules, the XML API, and latency or throughput.

Tests can reach into the store directly: :meth:`FakeGcs.replace_bytes` overwrites an object as a
bad actor (or a bug) would, keeping hashes consistent with the new bytes, so only a content check
such as the bundle store's sha256 can tell.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import attrs


def _crc32c_b64(data: bytes) -> str:
    import google_crc32c

    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define
class _Object:
    name: str
    data: bytes
    generation: int
    content_type: str
    created: float
    metadata: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class _Upload:
    bucket: str
    name: str
    content_type: str
    metadata: dict[str, str]
    conditions: dict[str, str]
    received: bytearray = attrs.field(factory=bytearray)


class _GcsError(Exception):
    def __init__(self, code: int, message: str, reason: str):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


class FakeGcs:
    """The fake's state and its HTTP server. ``start()`` returns the URL; ``stop()`` ends it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, _Object]] = {}
        self._denied: set[str] = set()
        self._uploads: dict[str, _Upload] = {}
        self._generation = int(time.time() * 1e6)
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        #: every request as (method, path with query), for tests that check what the client did
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-gcs", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- what tests use directly -------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        with self._lock:
            self._buckets.setdefault(name, {})

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            self._buckets.pop(name, None)
            self._denied.discard(name)

    def deny(self, bucket: str, denied: bool = True) -> None:
        """Answer every request on ``bucket`` with 403, as GCS does for a caller without access."""
        with self._lock:
            (self._denied.add if denied else self._denied.discard)(bucket)

    def object_names(self, bucket: str) -> list[str]:
        with self._lock:
            return sorted(self._buckets.get(bucket, {}))

    def read_bytes(self, bucket: str, name: str) -> bytes:
        with self._lock:
            return self._buckets[bucket][name].data

    def generation(self, bucket: str, name: str) -> int:
        with self._lock:
            return self._buckets[bucket][name].generation

    def replace_bytes(self, bucket: str, name: str, data: bytes) -> None:
        """Overwrite an existing object (a new generation, hashes matching the new bytes)."""
        with self._lock:
            old = self._buckets[bucket][name]
            self._buckets[bucket][name] = _Object(name, data, self._next_generation(), old.content_type, time.time(), old.metadata)

    def uploads_by_type(self) -> dict[str, int]:
        """How many uploads the client started, by ``uploadType`` (``multipart``, ``resumable``)."""
        counts: dict[str, int] = {}
        for method, path in list(self.requests):
            if method == "POST" and path.startswith("/upload/"):
                kind = parse_qs(urlsplit(path).query).get("uploadType", ["?"])[0]
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    # --- the API -------------------------------------------------------------------------

    def _next_generation(self) -> int:
        self._generation += 1
        return self._generation

    def _bucket(self, name: str) -> dict[str, _Object]:
        if name in self._denied:
            raise _GcsError(
                403,
                f"anonymous caller does not have storage.objects.get access to the Google Cloud Storage bucket {name}. "
                "Permission 'storage.objects.get' denied on resource (or it may not exist).",
                "forbidden",
            )
        bucket = self._buckets.get(name)
        if bucket is None:
            raise _GcsError(404, "The specified bucket does not exist.", "notFound")
        return bucket

    @staticmethod
    def _check(obj: _Object | None, conditions: dict[str, str]) -> None:
        generation = obj.generation if obj is not None else 0
        match = conditions.get("ifGenerationMatch")
        if match is not None and int(match) != generation:
            raise _GcsError(412, "At least one of the pre-conditions you specified did not hold.", "conditionNotMet")
        not_match = conditions.get("ifGenerationNotMatch")
        if not_match is not None and int(not_match) == generation:
            raise _GcsError(304, "Not modified", "notModified")

    def _resource(self, bucket: str, obj: _Object) -> dict[str, Any]:
        name = quote(obj.name, safe="")
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{obj.name}/{obj.generation}",
            "selfLink": f"{self.url}/storage/v1/b/{bucket}/o/{name}",
            "mediaLink": f"{self.url}/download/storage/v1/b/{bucket}/o/{name}?generation={obj.generation}&alt=media",
            "name": obj.name,
            "bucket": bucket,
            "generation": str(obj.generation),
            "metageneration": "1",
            "contentType": obj.content_type,
            "storageClass": "STANDARD",
            "size": str(len(obj.data)),
            "md5Hash": _md5_b64(obj.data),
            "crc32c": _crc32c_b64(obj.data),
            "etag": base64.b64encode(str(obj.generation).encode()).decode(),
            "timeCreated": _rfc3339(obj.created),
            "updated": _rfc3339(obj.created),
            "metadata": obj.metadata,
        }

    def _store(self, bucket: str, name: str, data: bytes, content_type: str, metadata: dict[str, str],
               conditions: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            objects = self._bucket(bucket)
            self._check(objects.get(name), conditions)
            obj = _Object(name, data, self._next_generation(), content_type, time.time(), metadata)
            objects[name] = obj
            return self._resource(bucket, obj)

    def _get(self, bucket: str, name: str, conditions: dict[str, str]) -> _Object:
        with self._lock:
            obj = self._bucket(bucket).get(name)
            generation = conditions.get("generation")
            if obj is None or (generation is not None and int(generation) != obj.generation):
                raise _GcsError(404, f"No such object: {bucket}/{name}", "notFound")
            self._check(obj, conditions)
            return obj


_CONDITIONS = ("ifGenerationMatch", "ifGenerationNotMatch", "generation")


def _handler(fake: FakeGcs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._send(code, json.dumps(doc).encode(), headers)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _dispatch(self) -> None:
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            conditions = {k: query[k] for k in _CONDITIONS if k in query}
            fake.requests.append((self.command, self.path))
            body = self._body() if self.command in ("POST", "PUT", "PATCH") else b""
            try:
                self._route(self.command, split.path, query, conditions, body)
            except _GcsError as exc:
                if exc.code == 304:
                    self._send(304)
                    return
                self._json(exc.code, {"error": {"code": exc.code, "message": exc.message,
                                                "errors": [{"message": exc.message, "domain": "global", "reason": exc.reason}]}})

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

        def _route(self, method: str, path: str, query: dict[str, str], conditions: dict[str, str], body: bytes) -> None:
            if path == "/storage/v1/b" and method == "POST":
                name = json.loads(body or b"{}").get("name", "")
                if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", name):
                    raise _GcsError(400, f"Invalid bucket name: '{name}'", "invalid")
                with fake._lock:
                    if name in fake._buckets:
                        raise _GcsError(409, "Your previous request to create the named bucket succeeded and you already own it.", "conflict")
                    fake._buckets[name] = {}
                self._json(200, {"kind": "storage#bucket", "name": name, "id": name})
                return
            m = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", path)
            if m:
                self._upload(method, unquote(m.group(1)), query, conditions, body)
                return
            m = re.fullmatch(r"(/download)?/storage/v1/b/([^/]+)/o/(.+)", path)
            if m:
                bucket, name = unquote(m.group(2)), unquote(m.group(3))
                if method == "GET" and (m.group(1) or query.get("alt") == "media"):
                    self._download(fake._get(bucket, name, conditions))
                elif method == "GET":
                    self._json(200, fake._resource(bucket, fake._get(bucket, name, conditions)))
                elif method == "DELETE":
                    with fake._lock:
                        objects = fake._bucket(bucket)
                        obj = objects.get(name)
                        if obj is None:
                            raise _GcsError(404, f"No such object: {bucket}/{name}", "notFound")
                        fake._check(obj, conditions)
                        del objects[name]
                    self._send(204)
                else:
                    raise _GcsError(405, f"{method} is not served by the fake on objects", "methodNotAllowed")
                return
            m = re.fullmatch(r"/storage/v1/b/([^/]+)/o", path)
            if m and method == "GET":
                bucket = unquote(m.group(1))
                prefix = query.get("prefix", "")
                with fake._lock:
                    items = [fake._resource(bucket, o) for n, o in sorted(fake._bucket(bucket).items()) if n.startswith(prefix)]
                self._json(200, {"kind": "storage#objects", "items": items})
                return
            m = re.fullmatch(r"/storage/v1/b/([^/]+)", path)
            if m and method == "GET":
                bucket = unquote(m.group(1))
                with fake._lock:
                    fake._bucket(bucket)
                self._json(200, {"kind": "storage#bucket", "name": bucket, "id": bucket, "metageneration": "1"})
                return
            raise _GcsError(404, f"the fake GCS does not serve {method} {path}", "notFound")

        def _download(self, obj: _Object) -> None:
            data = obj.data
            headers = {
                "X-Goog-Generation": str(obj.generation),
                "X-Goog-Hash": f"crc32c={_crc32c_b64(data)},md5={_md5_b64(data)}",
                "X-Goog-Stored-Content-Length": str(len(data)),
            }
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if ranged:
                start = int(ranged.group(1))
                end = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
                end = min(end, len(data) - 1)
                if start >= len(data) and data:
                    raise _GcsError(416, "Request range not satisfiable", "requestedRangeNotSatisfiable")
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                self._send(206, data[start:end + 1], headers, obj.content_type)
                return
            self._send(200, data, headers, obj.content_type)

        def _upload(self, method: str, bucket: str, query: dict[str, str], conditions: dict[str, str], body: bytes) -> None:
            kind = query.get("uploadType", "")
            if method == "POST" and kind == "media":
                name = query.get("name", "")
                resource = fake._store(bucket, name, body, self.headers.get("Content-Type", "application/octet-stream"), {}, conditions)
                self._json(200, resource)
            elif method == "POST" and kind == "multipart":
                meta, data, content_type = _parse_multipart(self.headers.get("Content-Type", ""), body)
                if "crc32c" in meta and meta["crc32c"] != _crc32c_b64(data):
                    raise _GcsError(400, "Provided CRC32C \"%s\" doesn't match calculated CRC32C." % meta["crc32c"], "invalid")
                if "md5Hash" in meta and meta["md5Hash"] != _md5_b64(data):
                    raise _GcsError(400, "Provided MD5 hash doesn't match calculated MD5 hash.", "invalid")
                name = meta.get("name") or query.get("name", "")
                resource = fake._store(bucket, name, data, meta.get("contentType") or content_type, meta.get("metadata") or {}, conditions)
                self._json(200, resource)
            elif method == "POST" and kind == "resumable" and "upload_id" not in query:
                meta = json.loads(body or b"{}")
                name = meta.get("name") or query.get("name", "")
                with fake._lock:
                    fake._check(fake._bucket(bucket).get(name), conditions)  # GCS checks at the start too
                    upload_id = uuid.uuid4().hex
                    fake._uploads[upload_id] = _Upload(
                        bucket, name, meta.get("contentType") or self.headers.get("X-Upload-Content-Type", "application/octet-stream"),
                        meta.get("metadata") or {}, conditions,
                    )
                location = f"{fake.url}/upload/storage/v1/b/{quote(bucket)}/o?uploadType=resumable&upload_id={upload_id}"
                self._send(200, b"", {"Location": location})
            elif method == "PUT" and "upload_id" in query:
                self._resumable_chunk(query["upload_id"], body)
            else:
                raise _GcsError(400, f"the fake GCS does not serve uploadType={kind!r} with {method}", "invalid")

        def _resumable_chunk(self, upload_id: str, body: bytes) -> None:
            with fake._lock:
                upload = fake._uploads.get(upload_id)
            if upload is None:
                raise _GcsError(404, f"no resumable upload session {upload_id}", "notFound")
            content_range = self.headers.get("Content-Range", "")
            m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", content_range.strip())
            if not m:
                raise _GcsError(400, f"bad Content-Range {content_range!r}", "invalid")
            if m.group(1) is not None:
                start = int(m.group(1))
                if start != len(upload.received):
                    # a chunk that does not continue where the fake is: tell the client what it has
                    self._send(308, b"", {"Range": f"bytes=0-{len(upload.received) - 1}"} if upload.received else {})
                    return
                upload.received += body
            total = m.group(3)
            if total != "*" and int(total) == len(upload.received):
                with fake._lock:
                    fake._uploads.pop(upload_id, None)
                resource = fake._store(upload.bucket, upload.name, bytes(upload.received), upload.content_type,
                                       upload.metadata, upload.conditions)
                self._json(200, resource)
                return
            self._send(308, b"", {"Range": f"bytes=0-{len(upload.received) - 1}"} if upload.received else {})

    return Handler


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes, str]:
    """The JSON metadata part and the media part of a ``multipart/related`` upload."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise _GcsError(400, "multipart upload without a boundary", "invalid")
    delimiter = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        headers = {}
        for line in head.strip().split(b"\r\n"):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        parts.append((headers, payload))
    if len(parts) != 2:
        raise _GcsError(400, f"multipart upload with {len(parts)} parts; expected 2", "invalid")
    meta = json.loads(parts[0][1] or b"{}")
    return meta, parts[1][1], parts[1][0].get("content-type", "application/octet-stream")
