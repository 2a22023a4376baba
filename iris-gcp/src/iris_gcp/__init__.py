"""Iris provider ``gcp``: TPU slices on Google Cloud (not yet implemented in this release)."""
