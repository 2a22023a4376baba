"""Local fakes of the Google services iris-gcp uses, for tests: the real Google client libraries
talk to them over real sockets on loopback addresses. See :mod:`iris_gcp.testing.boot` for how a
fake "machine" comes to life."""
