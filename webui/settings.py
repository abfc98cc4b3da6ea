"""Django settings for Caisson's web console, its node agents and Celery beat.

SQLite in the state directory is the embedded default; set ``DATABASE_URL``
(postgres://user:pass@host:port/name) to use PostgreSQL.  ``REDIS_URL`` is
the Celery broker, the channel layer and the cache (databases 0, 1 and 2 of
that server, or the numbers given in ``CAISSON_REDIS_DBS=broker,channels,cache``).
``CAISSON_NODE`` names this node (default: the host name). ``CAISSON_SECRETS``
is the directory of the installation's secrets (``webui.keys``): the
SECRET_KEY, the Redis password, the keys signing Celery and channel-layer
messages; without it, ``var/secrets`` of the checkout, made on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CAISSON_WEB_DATA", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)  # the SQLite file and collected static files live here

from webui import keys  # noqa: E402 - no Django in it

CAISSON_SECRETS = keys.ensure(Path(os.environ.get("CAISSON_SECRETS") or BASE_DIR / "var" / "secrets"))
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or keys.read(CAISSON_SECRETS, "secret_key")
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files, not a CDN
    "channels",
    "django_celery_beat",
    "webui",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "webui.https.SecureCookiesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files from the ASGI server itself, no separate web server
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webui.urls"
ASGI_APPLICATION = "webui.asgi.application"
WSGI_APPLICATION = "webui.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],  # templates live in webui/templates/webui/
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webui.context.layout",
            ],
            "builtins": ["webui.templatetags.sizes"],  # |ibytes: sizes in KiB/MiB/GiB, on every page
        },
    },
]


def _database() -> dict:
    url = os.environ.get("DATABASE_URL")
    if not url:
        # WAL and a busy timeout: the web server, the agent and beat write the same file.
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "caisson.sqlite3",
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
        }
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL: unsupported scheme '{parsed.scheme}' (use postgres://)")
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.path.lstrip("/"),
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
    }
    if os.environ.get("CAISSON_DB_POOL") == "1":
        # The web server (python -m webui.serve sets this): Django runs each request's sync code in a thread of
        # its own, and connections are per thread, so a kept connection is never reused and every
        # request would open a PostgreSQL backend (5-10 ms). A process-wide pool hands them over.
        # CONN_HEALTH_CHECKS makes Django give the pool psycopg's check: a connection is tried (one round trip)
        # as it is handed out, so after PostgreSQL restarted the pool's dead ones are replaced, not each
        # failing one request with a 500.
        database["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 20, "timeout": 10}}
        database["CONN_HEALTH_CHECKS"] = True
    else:
        # Other processes (node agent, beat, relay, management commands) keep their connections
        # (checked before reuse): a new PostgreSQL backend per job costs milliseconds.
        database.update({"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True})
    return database


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # collectstatic fills it (the run script does); WhiteNoise looks here first
WHITENOISE_USE_FINDERS = True  # serve straight from static/ too, so a fresh checkout works before collectstatic

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# ---- Redis: broker, channel layer, cache ----------------------------------------------------


def _redis_url() -> str:
    """``REDIS_URL`` with the installation's Redis password (``redis.password``) unless the URL has one."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    password = keys.read(CAISSON_SECRETS, "redis.password")
    parsed = urlparse(url)
    if password and not parsed.password and parsed.scheme in ("redis", "rediss"):
        from urllib.parse import quote

        url = parsed._replace(netloc=f"{parsed.username or ''}:{quote(password, safe='')}@{parsed.netloc}").geturl()
    return url


REDIS_URL = _redis_url()
_BROKER_DB, _CHANNELS_DB, _CACHE_DB = (int(n) for n in os.environ.get("CAISSON_REDIS_DBS", "0,1,2").split(","))

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "webui.channel_layer.RedisChannelLayer",  # fewer round trips; see there
        # A receive blocks in Redis up to 5 s (channels_redis's brpop_timeout); redis-py's own read
        # timeout is 5 s too by default, so an idle receive raced it and failed now and then.
        "CONFIG": {
            "hosts": [{"address": f"{REDIS_URL}/{_CHANNELS_DB}", "socket_timeout": 30}],
            "capacity": 1000,
            "expiry": 30,
            # every message carries an HMAC of this key, a time and a nonce; others are dropped
            "signing_key": keys.read(CAISSON_SECRETS, "channel.key"),
        },
    },
}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"{REDIS_URL}/{_CACHE_DB}"},
}

# ---- Celery: every action is a job on its node's queue --------------------------------------
CELERY_BROKER_URL = f"{REDIS_URL}/{_BROKER_DB}"
CELERY_RESULT_BACKEND = None  # job records live in the database, not in Celery results
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a job whose worker died is redelivered and found half-done (see tasks.base)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}  # longer than the longest backup
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Message signing (tasks.celery calls app.setup_security()): a worker runs only jobs signed with the key of
# this installation (the web tier's and beat's); anything else that lands in Redis is refused and logged.
CELERY_TASK_SERIALIZER = "auth"
CELERY_ACCEPT_CONTENT = ["auth"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_SECURITY_KEY = str(CAISSON_SECRETS / "celery.key")
CELERY_SECURITY_CERTIFICATE = str(CAISSON_SECRETS / "celery.pem")
CELERY_SECURITY_CERT_STORE = str(CAISSON_SECRETS / "certs" / "*.pem")
CELERY_SECURITY_DIGEST = "sha256"

CAISSON_NODE = os.environ.get("CAISSON_NODE") or os.uname().nodename.split(".")[0]
CAISSON_NODE_OFFLINE_AFTER = 45  # seconds without a heartbeat
CAISSON_SAMPLE_INTERVAL = float(os.environ.get("CAISSON_SAMPLE_INTERVAL", "10"))
# Seconds a console whose socket dropped keeps its shell for a reconnecting browser (the node's
# console relay reads it; the web tier tells the page).
CAISSON_CONSOLE_GRACE = float(os.environ.get("CAISSON_CONSOLE_GRACE", "30"))

# ---- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webui.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "webui.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "webui.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    # anon: requests without credentials per address (failed logins: LOGIN_FAILURE_* below)
    "DEFAULT_THROTTLE_RATES": {"anon": "60/min"},
    "NUM_PROXIES": 0,  # throttles key on the peer address; X-Forwarded-For is not trusted
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Caisson API",
    "DESCRIPTION": "Containers, jobs, templates and access of a Caisson datacenter. Long actions return a job.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ContainerStatusEnum": "webui.api.serializers.containers.CONTAINER_STATUS",
        "JobStatusEnum": "webui.api.serializers.jobs.JOB_STATUS",
        "NotifyWhenEnum": "webui.models.protection.ProtectionPolicy.NotifyWhen",
    },
}

# ---- security -------------------------------------------------------------------------------
CSRF_FAILURE_VIEW = "webui.views.errors.csrf_failure"
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]
SESSION_COOKIE_HTTPONLY = True
# Cookies go over TLS only when the console is served over it: always with CAISSON_HTTPS=1, else on each
# request that came over HTTPS (webui/https.py).  Behind a TLS-terminating proxy, name the header it sets
# (CAISSON_PROXY_SSL_HEADER=X-Forwarded-Proto); without a proxy the header is never trusted.
CAISSON_HTTPS = os.environ.get("CAISSON_HTTPS", "0") == "1"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = CAISSON_HTTPS
if os.environ.get("CAISSON_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + os.environ["CAISSON_PROXY_SSL_HEADER"].upper().replace("-", "_"), "https")
# Scripts only from our own static files (no inline script anywhere); styles also inline (xterm.js and uPlot
# write <style> elements and style attributes); the console's websocket is same-origin ('self').
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.SELF],
}
X_FRAME_OPTIONS = "SAMEORIGIN"  # the console pop-out frames our own pages only
# Failed logins on every path (webui/login_limits.py): per user name and per address ...
LOGIN_FAILURE_LIMIT = int(os.environ.get("CAISSON_LOGIN_FAILURES", "5"))
LOGIN_FAILURE_NETWORK_LIMIT = int(os.environ.get("CAISSON_LOGIN_NETWORK_FAILURES", "20"))  # ... per /24 or /64 ...
LOGIN_FAILURE_WINDOW = 300  # ... within this many seconds

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CAISSON_LOG_LEVEL", "INFO")},
    "loggers": {"uvicorn": {"level": "WARNING"}},
}

# ---- backups: mail of backup job runs, and how often beat checks backup jobs for a due run -------
EMAIL_HOST = os.environ.get("CAISSON_EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("CAISSON_EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("CAISSON_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("CAISSON_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("CAISSON_EMAIL_TLS", "0") == "1"
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = os.environ.get("CAISSON_EMAIL_FROM", f"caisson@{CAISSON_NODE}")
CAISSON_BACKUP_CHECK_INTERVAL = int(os.environ.get("CAISSON_BACKUP_CHECK_INTERVAL", "20"))  # seconds
