from django.urls import path

from webui.views import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
]
