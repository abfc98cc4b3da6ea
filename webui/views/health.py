from django.conf import settings
from django.db import connection
from django.http import FileResponse, JsonResponse
from django.views.decorators.cache import cache_control


def healthz(request):
    """Liveness for load balancers and the run script: the app answers and its database is reachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})


@cache_control(max_age=86400, public=True)
def favicon(request):
    """Browsers ask ``/favicon.ico`` on their own, before any page's ``<link rel=icon>``: answer, not 404."""
    icon = settings.BASE_DIR / "static" / "caisson" / "favicon.svg"
    return FileResponse(icon.open("rb"), content_type="image/svg+xml")
