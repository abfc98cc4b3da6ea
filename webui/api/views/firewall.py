"""The firewall API at Proxmox's three levels: ``/api/cluster/firewall/``, ``/api/nodes/<name>/firewall/``,
``/api/containers/<ctid>/firewall/``; under each ``rules/`` (list, add, ``rules/<pos>`` delete), ``options``
(change) and ``log``.  GET of the level gives the file parsed and as text; PUT replaces the whole text (the
way to edit aliases, IP sets and security groups in Proxmox's own syntax).  Changes answer 202 with their
jobs (``webui.actions.firewall``).
"""

from __future__ import annotations

from dataclasses import asdict

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from webui.access import access_for
from webui.actions import firewall as actions
from webui.actions import firewall_objects as objects
from webui.api.views.base import ApiViewSet
from webui.models import Container, Node


class FirewallTextSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text="the file, in Proxmox's format")


def _scope(request, name: str | None = None, ctid: int | None = None) -> actions.Scope:
    if ctid is not None:
        container = Container.objects.select_related("node").filter(ctid=ctid).first()
        if container is None or not access_for(request).can("VM.Audit", container):
            raise Http404(f"CT {ctid} does not exist")
        return actions.Scope("ct", container=container)
    if name is not None:
        return actions.Scope("host", node=get_object_or_404(Node, name=name))
    return actions.Scope("cluster")


def _answer(jobs) -> Response:
    first = jobs[0]
    return Response(
        {"job": first.summary(), "jobs": [j.summary() for j in jobs], "location": f"/api/jobs/{first.pk}/"},
        status=202,
    )


def _rule(pos: int, rule) -> dict:
    data = {k: v for k, v in asdict(rule).items() if v is not None}
    return {"pos": pos, **data, "text": actions.fwconfig.format_rule(rule)}


@extend_schema(tags=["firewall"])
class FirewallViewSet(ApiViewSet):
    serializer_class = FirewallTextSerializer

    def _read(self, request, kwargs) -> actions.Scope:
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        scope.check(self.access, write=False, address=self.address)
        return scope

    def retrieve(self, request, **kwargs):
        scope = self._read(request, kwargs)
        conf = actions.config_of(scope)
        return Response(
            {
                "level": scope.level,
                "file": scope.filename,
                "text": actions.text_of(scope),
                "options": conf.options,
                "rules": [_rule(i, r) for i, r in enumerate(conf.rules)],
                "aliases": [{"name": n, "cidr": c, "comment": note} for n, c, note in conf.aliases.values()],
                "ipsets": {
                    name: [{"nomatch": nm, "cidr": c, "comment": note} for nm, c, note in entries]
                    for name, entries in conf.ipsets.items()
                },
                "groups": {name: [_rule(i, r) for i, r in enumerate(rules)] for name, rules in conf.groups.items()},
                "warnings": conf.warnings,
            }
        )

    @extend_schema(request=FirewallTextSerializer)
    def update(self, request, **kwargs):
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        if not isinstance(request.data, dict) or set(request.data) != {"text"}:
            raise ValidationError({"text": ["a JSON object with the file's text, and nothing else"]})
        return _answer(actions.save(self.access, scope, request.data["text"], address=self.address))

    def rules(self, request, **kwargs):
        scope = self._read(request, kwargs)
        return Response([_rule(i, r) for i, r in enumerate(actions.config_of(scope).rules)])

    def add_rule(self, request, **kwargs):
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["a JSON object: type, action, and the rule's options"]})
        return _answer(actions.add_rule(self.access, scope, dict(request.data), address=self.address))

    def delete_rule(self, request, pos: int, **kwargs):
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        return _answer(actions.delete_rule(self.access, scope, int(pos), address=self.address))

    def options(self, request, **kwargs):
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        if not isinstance(request.data, dict) or not request.data:
            raise ValidationError({"non_field_errors": ['a JSON object of options, e.g. {"enable": 1}']})
        return _answer(actions.set_options(self.access, scope, dict(request.data), address=self.address))

    def _body(self, request) -> dict:
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["a JSON object"]})
        return dict(request.data)

    def aliases(self, request, **kwargs):
        if request.method == "GET":
            conf = actions.config_of(self._read(request, kwargs))
            return Response([{"name": n, "cidr": c, "comment": note} for n, c, note in conf.aliases.values()])
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        return _answer(objects.set_alias(self.access, scope, self._body(request), address=self.address))

    def delete_alias(self, request, alias: str, **kwargs):
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        return _answer(objects.delete_alias(self.access, scope, alias, address=self.address))

    def ipsets(self, request, **kwargs):
        if request.method == "GET":
            conf = actions.config_of(self._read(request, kwargs))
            return Response(
                {
                    name: {"comment": conf.ipset_comments.get(name), "entries": [
                        {"cidr": c, "nomatch": nm, "comment": note} for nm, c, note in entries
                    ]}
                    for name, entries in conf.ipsets.items()
                }
            )  # fmt: skip
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        return _answer(objects.set_ipset(self.access, scope, self._body(request), address=self.address))

    def delete_ipset(self, request, ipset: str, cidr: str | None = None, **kwargs):
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        return _answer(objects.delete_ipset(self.access, scope, ipset, cidr, address=self.address))

    def delete_ipset_entry(self, request, ipset: str, cidr: str, **kwargs):
        """One address of an IP set (``delete_ipset`` with a CIDR: an operation of its own in the schema)."""
        return self.delete_ipset(request, ipset, cidr, **kwargs)

    def groups(self, request, **kwargs):
        if request.method == "GET":
            conf = actions.config_of(self._read(request, kwargs))
            return Response(
                {
                    name: {
                        "comment": conf.group_comments.get(name),
                        "rules": [_rule(i, r) for i, r in enumerate(rules)],
                    }
                    for name, rules in conf.groups.items()
                }
            )
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        return _answer(objects.set_group(self.access, scope, self._body(request), address=self.address))

    def delete_group(self, request, group: str, pos: int | None = None, **kwargs):
        scope = _scope(request, kwargs.get("name"), kwargs.get("ctid"))
        return _answer(objects.delete_group(self.access, scope, group, pos, address=self.address))

    def delete_group_rule(self, request, group: str, pos: int, **kwargs):
        """One rule of a security group (``delete_group`` with a position)."""
        return self.delete_group(request, group, pos, **kwargs)

    def log(self, request, **kwargs):
        scope = self._read(request, kwargs)
        return Response(actions.log_lines(scope))


def firewall_urls() -> list:
    from django.urls import path

    routes = []
    for prefix, label in (
        ("cluster/firewall/", "cluster"),
        ("nodes/<str:name>/firewall/", "node"),
        ("containers/<int:ctid>/firewall/", "ct"),
    ):
        routes += [
            path(prefix, FirewallViewSet.as_view({"get": "retrieve", "put": "update"}), name=f"{label}-firewall"),
            path(
                f"{prefix}rules/",
                FirewallViewSet.as_view({"get": "rules", "post": "add_rule"}),
                name=f"{label}-fw-rules",
            ),
            path(
                f"{prefix}rules/<int:pos>", FirewallViewSet.as_view({"delete": "delete_rule"}), name=f"{label}-fw-rule"
            ),
            path(f"{prefix}options", FirewallViewSet.as_view({"put": "options"}), name=f"{label}-fw-options"),
            path(f"{prefix}log", FirewallViewSet.as_view({"get": "log"}), name=f"{label}-fw-log"),
        ]
        if label != "node":  # aliases and IP sets: the datacenter's and a container's, as in Proxmox
            view = FirewallViewSet.as_view
            routes += [
                path(f"{prefix}aliases/", view({"get": "aliases", "post": "aliases"}), name=f"{label}-fw-aliases"),
                path(f"{prefix}aliases/<str:alias>", view({"delete": "delete_alias"}), name=f"{label}-fw-alias"),
                path(f"{prefix}ipset/", view({"get": "ipsets", "post": "ipsets"}), name=f"{label}-fw-ipsets"),
                path(f"{prefix}ipset/<str:ipset>", view({"delete": "delete_ipset"}), name=f"{label}-fw-ipset"),
                path(
                    f"{prefix}ipset/<str:ipset>/<path:cidr>",
                    view({"delete": "delete_ipset_entry"}),
                    name=f"{label}-fw-ip",
                ),
            ]
        if label == "cluster":  # security groups are the datacenter's
            view = FirewallViewSet.as_view
            routes += [
                path(f"{prefix}groups/", view({"get": "groups", "post": "groups"}), name="cluster-fw-groups"),
                path(f"{prefix}groups/<str:group>", view({"delete": "delete_group"}), name="cluster-fw-group"),
                path(
                    f"{prefix}groups/<str:group>/<int:pos>",
                    view({"delete": "delete_group_rule"}),
                    name="cluster-fw-grule",
                ),
            ]
    return routes
