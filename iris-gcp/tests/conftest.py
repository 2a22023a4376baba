"""The fake GCP machine fixtures (``iris_gcp.testing.hosts_pytest``) for iris-gcp's tests; the
Docker engine fixtures they build on come from the root conftest."""

from iris_gcp.testing.hosts_pytest import container_booter, fake_host_image, fake_metadata, iris_image  # noqa: F401
