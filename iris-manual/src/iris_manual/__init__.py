"""Iris provider ``manual``: hosts you have, workers started over SSH; and the ``ssh`` tunnel."""
