from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("webui.pve.urls")),  # Proxmox's API, /api2/json/...
    path("api/", include("webui.api.urls")),
    path("", include("webui.views.urls")),
]

handler400 = "webui.views.errors.bad_request"
handler403 = "webui.views.errors.forbidden"
handler404 = "webui.views.errors.not_found"
handler500 = "webui.views.errors.server_error"
