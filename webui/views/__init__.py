"""Server-rendered pages: one module per area, routes in ``webui.views.urls``.

Pages are Django templates; ``static/caisson/live.js`` keeps what they show
current through the ``/ws/live/`` websocket, and forms marked ``data-async``
are sent with ``fetch`` so a click never reloads the page.
"""
