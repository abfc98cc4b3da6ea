"""Server-rendered pages: one module per area, routes in ``webui.views.urls``."""
