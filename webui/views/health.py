from django.db import connection
from django.http import JsonResponse


def healthz(request):
    """Liveness for load balancers and the run script: the app answers and its database is reachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})
