"""Caisson's web console (Django): pages, REST API and websockets.

It reads state and queues jobs (``tasks/``); it never changes a container by
calling the engine itself, and it needs no root.
"""
