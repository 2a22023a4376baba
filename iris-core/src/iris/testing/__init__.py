"""Test support for Iris and its plugins.

- :func:`wait_until`: poll a condition with a deadline (tests never sleep to wait for state).
- :mod:`iris.testing.fakes`: in-memory implementations of the seams, for tests of code that
  uses them.
- :mod:`iris.testing.contracts`: pytest contract suites, one per seam, that every
  implementation runs by subclassing (first-party and third-party alike)::

      from iris.testing import BundleStoreContract

      class TestMyBundleStore(BundleStoreContract):
          @pytest.fixture
          def bundle_store(self, tmp_path):
              return MyBundleStore(...)

The contract classes need pytest; they are imported on first use, so ``iris.testing`` itself
does not.
"""

from __future__ import annotations

from typing import Any

from iris.testing.polling import wait_until

_CONTRACT_NAMES = (
    "BundleStoreContract",
    "ContainerRuntimeContract",
    "TunnelContract",
    "VmManagerContract",
    "CONTRACTS",
)

__all__ = ["wait_until", *_CONTRACT_NAMES]


def __getattr__(name: str) -> Any:
    if name in _CONTRACT_NAMES:
        from iris.testing import contracts

        return getattr(contracts, name)
    raise AttributeError(f"module 'iris.testing' has no attribute {name!r}")
