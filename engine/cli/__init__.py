"""The engine's command line (``python -m engine``)."""
