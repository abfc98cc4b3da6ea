from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("webui.api.urls")),
    path("", include("webui.views.urls")),
]

handler400 = "webui.views.errors.bad_request"
handler403 = "webui.views.errors.forbidden"
handler404 = "webui.views.errors.not_found"
handler500 = "webui.views.errors.server_error"
