"""The web tier's end of browser terminals; the terminals themselves run in the node's relay.

``session`` is the websocket consumer (ticket, access re-checks, revocation,
the browser's frames), ``tickets`` who may hold a console, ``relay_client``
its talk with the node's relay over the channel layer, ``outbox`` the
frames to the browser in order. What consumer and relay say to each other is
``tasks.console_protocol``.
"""
