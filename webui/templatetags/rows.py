"""Container rows of the resource tree and of the container table, rendered in one pass.

A datacenter page shows every container the user may see twice (the tree
and the table): with 1,000 containers, 2,000 rows through the template
engine (a loop body of a dozen tags and a ``{% url %}`` each) took most of
the page's time. These tags write the same markup from plain Python with
escaping (``html.escape``, what Django's own escape calls), the link built
once per page.
"""

from __future__ import annotations

from html import escape

from django import template
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from webui.models.inventory import CTID_MAX

register = template.Library()

_PLACEHOLDER = CTID_MAX  # a container ID stands in its place in the reversed URL


def _ct_url() -> str:
    """The container page's URL with ``{ctid}`` where the ID goes."""
    return reverse("ct", args=[_PLACEHOLDER]).replace(str(_PLACEHOLDER), "{ctid}")


@register.simple_tag
def ct_tree_rows(containers, current=None) -> SafeString:
    """The tree's ``<li>`` per container; ``current`` is the page's container, if any."""
    url, esc = _ct_url(), escape
    current_id = getattr(current, "ctid", None)
    out = []
    for c in containers:
        ctid, status = c.ctid, esc(c.status)
        out.append(
            f'<li data-tree-ct="{ctid}"><a href="{url.format(ctid=ctid)}" class="'
            f'{"current" if ctid == current_id else ""}"><span class="icon icon-ct status-{status}" '
            f'data-ct-status-icon="{ctid}" title="{status}"></span>{ctid} <span class="muted" '
            f'data-ct-hostname="{ctid}">({esc(c.hostname)})</span>{_privileged_mark(c)} <span class="tags" '
            f'data-ct-tags="{ctid}">{_tags_html(c)}</span></a></li>\n'
        )
    return mark_safe("".join(out))  # noqa: S308 - every value above is escaped or an integer


def _privileged_mark(container) -> str:
    """Proxmox marks a privileged container: its root is the host's root."""
    if getattr(container, "unprivileged", True):
        return ""
    return (
        f' <span class="badge privileged" data-ct-privileged="{container.ctid}" title="privileged container: '
        'its root is root on the host">privileged</span>'
    )


def _tags_html(container) -> str:
    return "".join(f'<span class="tag">{escape(t)}</span>' for t in container.tags)


@register.simple_tag
def ct_table_rows(containers) -> SafeString:
    """The container table's ``<tr>`` per container, with its selection box for the bulk actions."""
    url, esc = _ct_url(), escape
    out = []
    for c in containers:
        ctid, status = c.ctid, esc(c.status)
        out.append(
            f'<tr data-ct-row="{ctid}" data-node="{esc(c.node.name)}"><td><input type="checkbox" class="ct-select" '
            f'value="{ctid}" aria-label="select CT {ctid}"></td><td><a href="{url.format(ctid=ctid)}">{ctid}</a></td>'
            f'<td data-ct-hostname="{ctid}">{esc(c.hostname)}</td>\n'
            f'    <td>{esc(c.node.name)}</td><td><span class="badge status-{status}" '
            f'data-ct-status="{ctid}">{status}</span></td>\n'
            f'    <td data-ct-ipv4="{ctid}">{esc(", ".join(map(str, c.ipv4 or ())))}</td>'
            f'<td data-ct-tags="{ctid}">{_tags_html(c)}</td></tr>\n'
        )
    return mark_safe("".join(out))  # noqa: S308 - every value above is escaped or an integer
