"""Proxmox VE's API (``/api2/json``, ``/api2/extjs``) over Caisson, so proxmoxer, Ansible's community.proxmox
and ``pvesh`` scripts drive it unchanged.

A thin mapping, not a second implementation: each handler checks its parameters against Proxmox's names
and types (``schema``), then calls the same ``webui.actions`` function the pages and ``/api/`` call, and
answers with the job's UPID (``upid``) or the rows Caisson already mirrors, in Proxmox's shapes.

``router`` dispatches (authentication, CSRF, the envelope and error shapes); ``auth`` holds tickets and
``PVEAPIToken`` headers; ``resources`` (cluster, nodes, storage), ``lxc`` (containers), ``tasks`` and
``access`` are the handlers, one module per part of Proxmox's tree.
"""
