"""Container runtimes built into Iris core (``docker``)."""
