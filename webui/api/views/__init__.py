"""API views, one module per resource; routes in ``webui.api.urls``."""
