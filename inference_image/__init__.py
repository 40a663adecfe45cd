"""LinkEdge inference image builder: train the APS classifier, serve it, package it."""

__version__ = "0.1.0"
