"""Iris: a distributed job orchestrator with pluggable providers."""

__version__ = "0.1.0"
