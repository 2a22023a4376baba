"""Helpers for clusters whose controller runs on a VM (seeds 000, 002, 004). Nothing here
imports a cloud SDK at import time."""
