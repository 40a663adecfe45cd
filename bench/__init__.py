"""LinkEdge's load benchmark: the real image against MLServer, side by side.

``python -m bench`` (see ``bench/__main__.py``).
"""
