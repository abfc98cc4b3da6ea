"""What every page's layout needs: the user's top-level rights, for the menus it shows."""
from __future__ import annotations

from webui.access import access_for


def layout(request) -> dict:
    if not request.user.is_authenticated:
        return {}
    access = access_for(request)
    return {"can": {priv: priv in access.privileges("/") for priv in
                    ("Sys.Audit", "Sys.Modify", "Permissions.Modify", "VM.Allocate", "Datastore.AllocateTemplate")}}
