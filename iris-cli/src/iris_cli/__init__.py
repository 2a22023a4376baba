"""The ``iris`` command."""
