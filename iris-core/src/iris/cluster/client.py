"""Seed-compatible bundle API: ``BundleCreator(workspace).create_bundle()`` returns the zip bytes.

    bundle = BundleCreator(Path(".")).create_bundle()
    client = IrisClient.remote(controller_url, bundle_blob=bundle)
"""

from __future__ import annotations

from pathlib import Path

from iris.bundle import DEFAULT_MAX_BUNDLE_BYTES, create_bundle


class BundleCreator:
    def __init__(self, workspace: Path, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES):
        self.workspace = Path(workspace)
        self.max_bytes = max_bytes

    def create_bundle(self) -> bytes:
        return create_bundle(self.workspace, max_bytes=self.max_bytes).data
