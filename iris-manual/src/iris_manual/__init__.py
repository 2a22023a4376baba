"""Iris provider ``manual``: a fixed list of hosts reached over SSH (not yet implemented)."""
