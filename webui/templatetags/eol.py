"""``{% eol_badge ct %}``: a badge on a container's page when its distribution is past its end of life."""

from __future__ import annotations

from django import template
from django.utils import timezone
from django.utils.html import format_html

from webui.eol import container_release

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
