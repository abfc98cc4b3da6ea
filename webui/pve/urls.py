"""``/api2/json/...`` and ``/api2/extjs/...``: every path goes to the one dispatcher (``webui.pve.router``)."""

from django.urls import re_path

from webui.pve.router import dispatch

urlpatterns = [re_path(r"^api2/(?P<fmt>json|extjs)(?:/(?P<path>.*))?$", dispatch, name="pve-api")]
