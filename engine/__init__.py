"""Caisson's container engine: a pure-Python library that runs system containers.

It never imports Django or Celery; the web tier and the jobs call it, and so
does its own CLI (``python -m engine``).
"""
