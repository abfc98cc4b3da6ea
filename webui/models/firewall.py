"""The firewall files of each node (``cluster.fw``, ``host.fw``, ``<vmid>.fw``), as its agent last read them.

The node's files are the truth (its agent enforces them); these rows let the web tier show and edit them
without reading a node's disk.  ``cluster.fw`` is the datacenter's: every node holds a copy, written by
one job per node.
"""

from __future__ import annotations

from django.db import models

from webui.models.inventory import Node


class FirewallFile(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="firewall_files")
    name = models.CharField(max_length=32)  # cluster.fw, host.fw, <vmid>.fw
    text = models.TextField(blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node__name", "name"]
        constraints = [models.UniqueConstraint(fields=["node", "name"], name="firewall_file_unique_per_node")]

    def __str__(self) -> str:
        return f"{self.name} on {self.node}"
