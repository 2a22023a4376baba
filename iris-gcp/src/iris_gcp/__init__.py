"""Iris provider ``gcp``: TPU slices on Google Cloud (:mod:`iris_gcp.tpu`)."""
