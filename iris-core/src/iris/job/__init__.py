"""The job vocabulary: resources, entrypoints, environments, states, constraints, TPU topologies.

It sits at the bottom of the house: config, bundles, RPC conversion and everything above import
it; it imports nothing of Iris but :mod:`iris.errors`. The public names users write against stay
importable from their seed locations (``iris.cluster.types``, ``iris.cluster.constraints``).
"""
