"""Cluster orchestration: types, controller, worker and lifecycle."""
