"""pytest fixtures for the fake GCS (:mod:`iris_gcp.testing.fake_gcs`).

Use them from a test module with ``from iris_gcp.testing.gcs_pytest import fake_gcs, gcs_bucket``
(or ``pytest_plugins = ["iris_gcp.testing.gcs_pytest"]`` in a root ``conftest.py``):

- ``fake_gcs`` (session): one fake server on 127.0.0.1 for the whole session.
- ``gcs_bucket`` (per test): a new, empty bucket on it, with ``STORAGE_EMULATOR_HOST`` pointing
  at the fake for the test's duration (so ``google.cloud.storage.Client()`` here, and any process
  the test starts, talk to the fake). Its ``url`` is ``gs://<bucket>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import attrs
import pytest

from iris_gcp.testing.fake_gcs import FakeGcs


@attrs.frozen
class GcsBucket:
    name: str
    fake: FakeGcs

    @property
    def url(self) -> str:
        return f"gs://{self.name}"

    @property
    def env(self) -> dict[str, str]:
        """What a child process needs in its environment to reach the fake."""
        return {"STORAGE_EMULATOR_HOST": self.fake.url}


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcs]:
    fake = FakeGcs("127.0.0.1")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsBucket]:
    name = f"iris-test-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(name)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    try:
        yield GcsBucket(name, fake_gcs)
    finally:
        fake_gcs.delete_bucket(name)
