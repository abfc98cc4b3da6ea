"""Session and CSRF cookies marked Secure on every answer to a request that came over HTTPS.

Django's ``SESSION_COOKIE_SECURE``/``CSRF_COOKIE_SECURE`` are fixed settings (on with ``CAISSON_HTTPS=1``); a
console reachable over both HTTP and HTTPS would otherwise hand its HTTPS users cookies that a plain-HTTP
request could leak.  ``request.is_secure()`` is the TLS of the connection itself, or the proxy header named in
``CAISSON_PROXY_SSL_HEADER`` when one is configured.
"""

from __future__ import annotations

from django.conf import settings


class SecureCookiesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.is_secure():
            for name in (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME):
                if name in response.cookies:
                    response.cookies[name]["secure"] = True
        return response
