"""The bottom layer: the generic registry, errors, where things live, and file helpers.

Nothing here knows about datasets, methods or records; every other layer may import it.
"""
