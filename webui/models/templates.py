"""A node's template sources (``template/sources.json`` on the node), as its agent last reported them."""

from __future__ import annotations

from django.db import models

from webui.models.inventory import Node


class TemplateSource(models.Model):
    """One catalog source of a node with how its last update went and the news its index carries.

    The node owns the list; edits go to it as ``tmplsources`` jobs and come back here after each."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="template_sources")
    source_id = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    url = models.CharField(max_length=2000)
    enabled = models.BooleanField(default=True)
    signed = models.BooleanField(default=False)  # a keyring is configured: the index's signature is checked
    position = models.PositiveIntegerField(default=0)  # order in sources.json
    last_attempt = models.DateTimeField(null=True, blank=True)
    last_success = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)  # of the last attempt; empty if it succeeded
    count = models.IntegerField(null=True, blank=True)  # templates at the last success
    news_headline = models.CharField(max_length=255, blank=True)
    news_text = models.TextField(blank=True)  # an HTML fragment as published: shown as plain text only

    class Meta:
        ordering = ["node__name", "position"]
        constraints = [models.UniqueConstraint(fields=["node", "source_id"], name="template_source_unique")]

    def __str__(self) -> str:
        return f"{self.node.name}: {self.source_id}"
