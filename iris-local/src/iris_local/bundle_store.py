"""BundleStore for ``file://`` URLs: bundles are files ``<dir>/<sha256>.zip``."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from iris.errors import BundleError


class FileBundleStore:
    def __init__(self, url_prefix: str):
        parsed = urlparse(url_prefix)
        if parsed.scheme not in ("file", ""):
            raise BundleError(f"file bundle store: {url_prefix!r} is not a file:// URL")
        self._prefix = url_prefix.rstrip("/")
        self._dir = Path(unquote(parsed.path) if parsed.scheme else url_prefix)
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, bundle_id: str) -> Path:
        if len(bundle_id) != 64 or any(c not in "0123456789abcdef" for c in bundle_id):
            raise BundleError(f"bundle id {bundle_id!r} is not a sha256 hex digest")
        return self._dir / f"{bundle_id}.zip"

    def url_for(self, bundle_id: str) -> str:
        self._path(bundle_id)
        return f"{self._prefix}/{bundle_id}.zip"

    def exists(self, bundle_id: str) -> bool:
        return self._path(bundle_id).exists()

    def put(self, bundle_id: str, data: bytes) -> str:
        path = self._path(bundle_id)
        actual = hashlib.sha256(data).hexdigest()
        if actual != bundle_id:
            raise BundleError(f"bundle id {bundle_id} does not match its content (sha256 {actual})")
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".upload-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return self.url_for(bundle_id)

    def get(self, bundle_id: str, dest_dir: Path) -> Path:
        path = self._path(bundle_id)
        if not path.exists():
            raise BundleError(f"bundle {bundle_id} not found in {self._prefix}")
        return path
