"""``{% eol_badge ct %}``: a badge on a container's page when its distribution is past its end of life."""

from __future__ import annotations

from django import template
from django.utils import timezone
from django.utils.html import format_html

from webui.eol import container_release, template_release

register = template.Library()


@register.simple_tag
def eol_badge(container) -> str:
    found = container_release(container)
    if found is None or not found.ended(timezone.localdate()):
        return ""
    extended = f"; extended support until {found.lts.isoformat()}" if found.lts else ""
    return format_html(
        '<span class="badge eol" id="ct-eol" title="{} {} lost security support on {}{}">end of life: {} {}</span>',
        found.distro,
        found.version,
        found.eol.isoformat(),
        extended,
        found.distro,
        found.version,
    )


@register.simple_tag
def template_eol(name: str) -> str:
    """A note after a template's version: when its distribution release loses, or lost, security support."""
    found = template_release(name)
    if found is None or found.eol is None:
        return ""
    if found.ended(timezone.localdate()):
        return format_html(' <span class="badge eol" title="no more security updates">end of life {}</span>', found.eol)
    return format_html(' <span class="muted" title="end of security support">until {}</span>', found.eol)
