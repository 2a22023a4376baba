"""Iris provider ``local``: everything on this machine."""
