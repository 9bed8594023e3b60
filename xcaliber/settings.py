"""Settings, read from the environment.

Two modes share this file:

* ``XCALIBER_ENV=embedded`` (the default): SQLite, files on local disk, the
  in-memory channel layer, a secret key generated on first run and kept in the
  data directory. Nothing but Python is needed.
* ``XCALIBER_ENV=production``: every secret and address comes from the
  environment; start-up stops, naming the variable, when one is missing.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped,unused-ignore]  # no stubs; seen only by the settings plugin
from django.core.exceptions import ImproperlyConfigured

from xcaliber.lib.env import env_bool, env_choice, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

XCALIBER_ENV = env_choice("XCALIBER_ENV", ("embedded", "production"), "embedded")
PRODUCTION = XCALIBER_ENV == "production"
DATA_DIR = Path(env_str("XCALIBER_DATA_DIR", str(BASE_DIR / "var"))).resolve()


def _require(name: str, value: Any) -> Any:
    if PRODUCTION and not value:
        raise ImproperlyConfigured(f"XCALIBER_ENV=production requires {name}")
    return value


def _embedded_secret_key() -> str:
    """A per-installation key kept in the data directory, created on first use."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < 50:
            raise ImproperlyConfigured(
                f"{path} holds no usable secret key; delete it to regenerate"
            ) from None
        return key
    key = secrets.token_urlsafe(64)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


SECRET_KEY = _require("XCALIBER_SECRET_KEY", env_secret("XCALIBER_SECRET_KEY")) or _embedded_secret_key()
if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("XCALIBER_SECRET_KEY must be at least 32 characters")

DEBUG = env_bool("XCALIBER_DEBUG", False)

ALLOWED_HOSTS = env_list("XCALIBER_ALLOWED_HOSTS", () if PRODUCTION else ("127.0.0.1", "localhost", "[::1]"))
_require("XCALIBER_ALLOWED_HOSTS", ALLOWED_HOSTS)

_database_url = _require("DATABASE_URL", env_secret("DATABASE_URL")) or f"sqlite:///{DATA_DIR / 'db.sqlite3'}"
try:
    _database = dj_database_url.parse(_database_url, conn_max_age=env_int("XCALIBER_DB_CONN_MAX_AGE", 0))
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
if _database["ENGINE"] == "django.db.backends.postgresql":
    # Fail fast when the server does not answer, so /readyz reports it instead of hanging.
    _database.setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("XCALIBER_DB_CONNECT_TIMEOUT", 5)
    )
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["ENGINE"] = "xcaliber.lib.sqlite"  # Django's, plus a connection pool and a writer queue
    _database.setdefault("OPTIONS", {})
    # WAL and a busy timeout let the web process and the in-process worker share the file; with WAL,
    # synchronous=NORMAL stays consistent after a crash and saves an fsync per commit.
    _database["OPTIONS"].update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = _require("REDIS_URL", env_secret("REDIS_URL"))

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "clinics",
    "billing",
    "inference",
    "referrals",
]

# Django's security, common and clickjacking middleware keep their names here (``check --deploy`` looks for
# them); under ASGI their hooks run on the server's loop (xcaliber.middleware.HOOKS_ON_THE_LOOP).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "xcaliber.middleware.StaticFilesMiddleware",  # WhiteNoise, without its thread hops under ASGI
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "xcaliber.urls"
ASGI_APPLICATION = "xcaliber.asgi.application"
AUTH_USER_MODEL = "clinics.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic is for production images; the embedded default serves assets from the packages.
STATIC_ROOT = DATA_DIR / "static" if PRODUCTION else None
# Serve the offline API docs assets straight from the installed packages: no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False


# Files: local disk by default, S3 (or any S3-protocol server) when a bucket is named.
def s3_storage(
    *,
    bucket: str,
    endpoint_url: str | None,
    region: str,
    access_key: str | None,
    secret_key: str | None,
    addressing_style: str = "auto",
    connect_timeout: int = 5,
    read_timeout: int = 30,
    max_attempts: int = 3,
) -> dict[str, Any]:
    """The storage entry for a private, encrypted S3 bucket (the tests build theirs with it too)."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url,
            "region_name": region,
            "access_key": access_key,
            "secret_key": secret_key,
            "default_acl": None,
            "querystring_auth": True,
            # Keys are built from fresh UUIDs, so no name can clash: skipping django-storages' existence
            # check saves a HEAD request (and, per request thread, building an S3 client) on every save.
            "file_overwrite": True,
            "object_parameters": {"ServerSideEncryption": "AES256"},
            # Files opened through the backend spill to disk past 1 MB instead of staying in memory.
            "max_memory_size": 1024 * 1024,
            # botocore's defaults (60 s timeouts, retries) would hold /readyz and requests for minutes.
            # With a client_config, django-storages ignores its own signature_version and
            # addressing_style options: they belong in the config itself.
            "client_config": BotoConfig(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
            ),
        },
    }


S3_BUCKET = env_str("XCALIBER_S3_BUCKET", "")
if S3_BUCKET:
    _default_storage = s3_storage(
        bucket=S3_BUCKET,
        endpoint_url=env_str("XCALIBER_S3_ENDPOINT_URL", "") or None,
        region=env_str("XCALIBER_S3_REGION", "us-east-1"),
        access_key=env_secret("XCALIBER_S3_ACCESS_KEY_ID"),
        secret_key=env_secret("XCALIBER_S3_SECRET_ACCESS_KEY"),
        addressing_style=env_choice("XCALIBER_S3_ADDRESSING_STYLE", ("auto", "path", "virtual"), "auto"),
        connect_timeout=env_int("XCALIBER_S3_CONNECT_TIMEOUT", 5, minimum=1),
        read_timeout=env_int("XCALIBER_S3_READ_TIMEOUT", 30, minimum=1),
        max_attempts=env_int("XCALIBER_S3_MAX_ATTEMPTS", 3, minimum=1),
    )
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "media")},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # The layer blocks up to 5 s (BZPOPMIN) waiting for a message; redis-py's default 5 s socket
            # timeout would then break every quiet WebSocket after 5 s, so reads may wait longer.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}]},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The embedded server's web processes (``run.py serve --web-workers N`` sets it; uvicorn ``--workers``).
# With more than one and no Redis, the processes share what one process keeps in memory: WebSocket
# tickets and throttles go to a cache in files, events and read wake-ups travel between them as notes
# over Unix sockets in PEERS_DIR, and one leader runs the read worker and the timers (xcaliber.lib.peers).
XCALIBER_WEB_PROCESSES = env_int("XCALIBER_WEB_PROCESSES", 1, minimum=1, maximum=64)
XCALIBER_PEERS_DIR = DATA_DIR / "run" if XCALIBER_WEB_PROCESSES > 1 and not REDIS_URL else None
if XCALIBER_PEERS_DIR is not None:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "clinics.tenancy.authentication.BearerTokenAuthentication",
        "clinics.tenancy.authentication.ApiKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "xcaliber.lib.pagination.CreatedCursorPagination",
    "DEFAULT_SCHEMA_CLASS": "xcaliber.lib.schema.ProblemAutoSchema",
    "EXCEPTION_HANDLER": "xcaliber.lib.problems.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("XCALIBER_ACCESS_TOKEN_MINUTES", 10, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("XCALIBER_REFRESH_TOKEN_DAYS", 14, minimum=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env_secret("XCALIBER_JWT_SIGNING_KEY") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "sub",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "X Caliber API",
    "DESCRIPTION": (
        "Veterinary X-ray AI reads: clinics, seats, studies, reads, referrals. "
        "Every error is an RFC 9457 problem (`application/problem+json`) with a stable `code`. "
        "People authenticate with `Authorization: Bearer <access token>`; systems with "
        "`Authorization: Api-Key <key>`. A person in several clinics names one with the `X-Clinic` header."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "clinics.tenancy.models.Role",
        "ClinicKindEnum": "clinics.tenancy.models.ClinicKind",
        "StudyStatusEnum": "clinics.records.models.StudyStatus",
        "InvitationStatusEnum": ["pending", "accepted", "revoked", "expired"],
        "ReadStatusEnum": "inference.models.ReadStatus",
        "ModelVersionStatusEnum": "inference.models.ModelVersionStatus",
        "WebhookDeliveryStatusEnum": "clinics.webhooks.models.DeliveryStatus",
    },
}

XCALIBER_PUBLIC_URL = env_str("XCALIBER_PUBLIC_URL", "http://127.0.0.1:8000")

EMAIL_BACKEND = env_str(
    "XCALIBER_EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env_str("XCALIBER_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("XCALIBER_EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("XCALIBER_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_secret("XCALIBER_EMAIL_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("XCALIBER_EMAIL_TLS", False)
DEFAULT_FROM_EMAIL = env_str("XCALIBER_EMAIL_FROM", "X Caliber <noreply@localhost>")

# X Caliber's own knobs.
XCALIBER = {
    "ALLOW_SIGNUP": env_bool("XCALIBER_ALLOW_SIGNUP", True),
    "DEFAULT_SEAT_LIMIT": env_int("XCALIBER_DEFAULT_SEAT_LIMIT", 5, minimum=1),
    "INVITATION_TTL_HOURS": env_int("XCALIBER_INVITATION_TTL_HOURS", 7 * 24, minimum=1),
    "LOGIN_MAX_FAILURES": env_int("XCALIBER_LOGIN_MAX_FAILURES", 5, minimum=1),
    "LOGIN_LOCKOUT_SECONDS": env_int("XCALIBER_LOGIN_LOCKOUT_SECONDS", 900, minimum=1),
    "TRUSTED_PROXY_COUNT": env_int("XCALIBER_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10),
    "API_KEY_TOUCH_SECONDS": env_int("XCALIBER_API_KEY_TOUCH_SECONDS", 60, minimum=0),
    "READYZ_TIMEOUT_SECONDS": env_int("XCALIBER_READYZ_TIMEOUT_SECONDS", 3, minimum=1),
    # Uploads: refused past these, before anything is stored.
    "MAX_UPLOAD_BYTES": env_int("XCALIBER_MAX_UPLOAD_MB", 200, minimum=1) * 1024 * 1024,
    "MAX_IMAGE_PIXELS": env_int("XCALIBER_MAX_IMAGE_MEGAPIXELS", 50, minimum=1) * 1_000_000,
    "MAX_DICOM_FRAMES": env_int("XCALIBER_MAX_DICOM_FRAMES", 1000, minimum=1),
    "MAX_FILES_PER_REQUEST": env_int("XCALIBER_MAX_FILES_PER_REQUEST", 50, minimum=1, maximum=1000),
    "IDEMPOTENCY_TTL_HOURS": env_int("XCALIBER_IDEMPOTENCY_TTL_HOURS", 24, minimum=1),
    "DOWNLOAD_URL_SECONDS": env_int("XCALIBER_DOWNLOAD_URL_SECONDS", 300, minimum=10, maximum=3600),
    # Presigned direct-to-S3 uploads: how long the signed form is valid (then the upload expires).
    "DIRECT_UPLOAD_TTL_SECONDS": env_int(
        "XCALIBER_DIRECT_UPLOAD_TTL_SECONDS", 3600, minimum=60, maximum=7 * 24 * 3600
    ),
    "PREVIEW_MAX_SIDE": env_int("XCALIBER_PREVIEW_MAX_SIDE", 2048, minimum=256),
    "THUMBNAIL_MAX_SIDE": env_int("XCALIBER_THUMBNAIL_MAX_SIDE", 256, minimum=32),
    # On the background thread a preview waits while uploads keep arriving (none started for 0.25 s), at
    # most this long after its image was stored (clinics.records.tasks); 0: never waits.
    "PREVIEW_DEFER_SECONDS": env_int("XCALIBER_PREVIEW_DEFER_SECONDS", 10, minimum=0, maximum=3600),
    # Previews are rendered in a child process of the server (clinics.records.render); 0: on its thread.
    "PREVIEW_PROCESS": env_bool("XCALIBER_PREVIEW_PROCESS", True),
    # Uploads are written to local disk past the page cache (O_DIRECT, xcaliber.lib.direct_write) where
    # the file system allows it. Default: with local storage, where the file stays put and is read back
    # once, for its preview; with S3 the request reads it again at once to send it, from the page cache.
    "UPLOAD_DIRECT_WRITES": env_bool("XCALIBER_UPLOAD_DIRECT_WRITES", not S3_BUCKET),
    # The server and its preview process keep freed buffers for reuse (xcaliber.lib.allocator; glibc only).
    "KEEP_FREED_BUFFERS": env_bool("XCALIBER_KEEP_FREED_BUFFERS", True),
    # AI reads: the worker claims up to READ_BATCH_MAX queued reads at once, waiting READ_BATCH_WINDOW_MS
    # after a wake-up for more to arrive; a claimed read is leased for READ_LEASE_SECONDS and failed after
    # READ_MAX_ATTEMPTS claims. Heatmap overlays are PNGs of at most HEATMAP_MAX_SIDE pixels.
    "READ_BATCH_MAX": env_int("XCALIBER_READ_BATCH_MAX", 16, minimum=1, maximum=256),
    "READ_BATCH_WINDOW_MS": env_int("XCALIBER_READ_BATCH_WINDOW_MS", 15, minimum=0, maximum=1000),
    "READ_LEASE_SECONDS": env_int("XCALIBER_READ_LEASE_SECONDS", 30, minimum=5),
    # A read queued this long without being claimed is dispatched again by the reconciler.
    "READ_STALE_QUEUED_SECONDS": env_int("XCALIBER_READ_STALE_QUEUED_SECONDS", 15, minimum=1),
    "READ_MAX_ATTEMPTS": env_int("XCALIBER_READ_MAX_ATTEMPTS", 3, minimum=1, maximum=20),
    "READ_DECODE_THREADS": env_int("XCALIBER_READ_DECODE_THREADS", 2, minimum=1, maximum=32),
    "HEATMAP_MAX_SIDE": env_int("XCALIBER_HEATMAP_MAX_SIDE", 768, minimum=128, maximum=4096),
    # The WebSocket event stream: ticket lifetime, and how often an open connection re-checks its
    # credential (deactivated members and revoked keys are dropped).
    "WS_TICKET_SECONDS": env_int("XCALIBER_WS_TICKET_SECONDS", 30, minimum=5, maximum=600),
    "WS_RECHECK_SECONDS": env_int("XCALIBER_WS_RECHECK_SECONDS", 60, minimum=1, maximum=3600),
    # Webhooks: failed attempts are retried with backoff for WEBHOOK_RETRY_HOURS after the first one; an
    # endpoint is disabled after WEBHOOK_DISABLE_AFTER_FAILURES failed attempts in a row; the sweeper
    # thread (XCALIBER_BACKGROUND=thread) looks for due retries every WEBHOOK_SWEEP_SECONDS (0: never,
    # run ``manage.py webhooks_deliver`` instead).
    "WEBHOOK_RETRY_HOURS": env_int("XCALIBER_WEBHOOK_RETRY_HOURS", 24, minimum=1, maximum=24 * 7),
    "WEBHOOK_DISABLE_AFTER_FAILURES": env_int("XCALIBER_WEBHOOK_DISABLE_AFTER_FAILURES", 20, minimum=1),
    "WEBHOOK_SWEEP_SECONDS": env_int("XCALIBER_WEBHOOK_SWEEP_SECONDS", 15, minimum=0, maximum=3600),
}

# Webhook targets that resolve to internal addresses are refused (SSRF) unless allowed here: LOOPBACK
# allows 127.0.0.0/8 and ::1 only (tests, a receiver on the same machine); PRIVATE allows every private,
# loopback, link-local and shared range, and plain http in production (a partner on the clinic's network).
XCALIBER_WEBHOOKS_ALLOW_PRIVATE = env_bool("XCALIBER_WEBHOOKS_ALLOW_PRIVATE", False)
XCALIBER_WEBHOOKS_ALLOW_LOOPBACK = env_bool("XCALIBER_WEBHOOKS_ALLOW_LOOPBACK", False)

# Browser origins (scheme://host[:port]) allowed to open /ws/events/ besides the allowed hosts.
XCALIBER_WS_ALLOWED_ORIGINS = env_list("XCALIBER_WS_ALLOWED_ORIGINS", ())

# Where queued AI reads run. "thread": a worker thread of this process (the embedded default);
# "inline": at commit, in the calling thread (tests, management commands); "off": only a separate
# ``manage.py reads_work`` process runs them; "celery" (the production default): a wake-up on the
# ``inference`` queue for ``manage.py inference_worker``.
XCALIBER_READ_WORKER = env_choice(
    "XCALIBER_READ_WORKER", ("thread", "inline", "off", "celery"), "celery" if PRODUCTION else "thread"
)
# Celery (production dispatch; see xcaliber/celery.py). Visibility timeout and restore sweeps are short so a
# killed worker's wake-ups come back within seconds; the reconciler covers anything else.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"inference.tasks.reads_run_task": {"queue": "inference"}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("XCALIBER_CELERY_VISIBILITY_TIMEOUT", 30, minimum=5),
    "unacked_restore_interval": env_int("XCALIBER_CELERY_RESTORE_INTERVAL", 2, minimum=1),
    "unacked_restore_throttle": 1,
    "socket_timeout": 5,
    "socket_connect_timeout": 5,
    "health_check_interval": 10,
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "referrals-sla": {"task": "referrals.tasks.referrals_sla_check", "schedule": 60.0},
    "reads-reconcile": {
        "task": "inference.tasks.reads_reconcile",
        "schedule": float(env_int("XCALIBER_READ_RECONCILE_SECONDS", 10, minimum=1)),
    },
}

# "cpu" or "cuda" (one device per process); the model runs bf16 channels_last on CUDA.
XCALIBER_INFERENCE_DEVICE = env_choice("XCALIBER_INFERENCE_DEVICE", ("cpu", "cuda"), "cpu")

# "thread": after-commit work (previews) runs on a background thread of this process; "inline": at
# commit, in the calling thread.
XCALIBER_BACKGROUND = env_choice("XCALIBER_BACKGROUND", ("thread", "inline"), "thread")

# Uploads land in a temporary file beside local storage, so storing one is a rename.
FILE_UPLOAD_TEMP_DIR = env_str("XCALIBER_UPLOAD_TEMP_DIR", str(DATA_DIR / "tmp"))
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
# Touched as each large upload starts, by every web process on this machine (xcaliber.lib.activity).
XCALIBER_UPLOADS_MARK = str(DATA_DIR / "run" / "uploads-arriving")
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = XCALIBER["MAX_FILES_PER_REQUEST"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("XCALIBER_LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Billing (billing/): Stripe subscriptions, seats, metered reads, entitlements. The two secrets have no
# default; without them the endpoints that call Stripe answer 503 `billing_not_configured`.
STRIPE_SECRET_KEY = env_secret("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_secret("STRIPE_WEBHOOK_SECRET")
_SEAT_OVERAGE = ("prorate", "refuse")
BILLING = {
    # Refuse new reads to clinics whose subscription does not allow them (off: a self-hosted install
    # without billing; every clinic may read).
    "ENFORCE": env_bool("XCALIBER_BILLING_ENFORCE", PRODUCTION),
    # Pinned: outbound calls send it, and webhook events of another version are refused.
    "STRIPE_API_VERSION": env_str("XCALIBER_STRIPE_API_VERSION", "2026-10-28.endive"),
    # Another Stripe-protocol server (stripe-mock, tests); blank: api.stripe.com.
    "STRIPE_API_BASE": env_str("XCALIBER_STRIPE_API_BASE", ""),
    "STRIPE_MAX_NETWORK_RETRIES": env_int("XCALIBER_STRIPE_MAX_NETWORK_RETRIES", 2, minimum=0, maximum=5),
    "WEBHOOK_TOLERANCE_SECONDS": 300,
    "TRIAL_DAYS": env_int("XCALIBER_BILLING_TRIAL_DAYS", 30, minimum=0),
    "PAST_DUE_GRACE_DAYS": env_int("XCALIBER_BILLING_GRACE_DAYS", 7, minimum=0),
    "METER_EVENT_NAME": env_str("XCALIBER_STRIPE_METER_EVENT", "xcaliber_reads"),
    "USAGE_MAX_ATTEMPTS": env_int("XCALIBER_BILLING_USAGE_MAX_ATTEMPTS", 12, minimum=1),
    "RETURN_URL": env_str("XCALIBER_BILLING_RETURN_URL", XCALIBER_PUBLIC_URL.rstrip("/") + "/billing"),
    # Plans as data; Stripe price ids per environment. Amounts live in Stripe, never in code.
    # seat_overage: "prorate" (adding a member past the paid seats buys one at once, prorated; an admin
    # may also set seats) or "refuse" (such an add is a 409; seats change through checkout or the portal).
    # Either way a removal gives a seat back from the next period (billing/seats.py).
    "PLANS": {
        "trial": {
            "name": "Free trial",
            "audience": "clinic",
            "kind": "trial",
            "seats_included": env_int("XCALIBER_BILLING_TRIAL_SEATS", 5, minimum=1),
        },
        "clinic-monthly": {
            "name": "Clinic, monthly, unlimited reads",
            "audience": "clinic",
            "kind": "flat",
            "seats_included": env_int("XCALIBER_BILLING_CLINIC_SEATS_INCLUDED", 3, minimum=1),
            "price": env_str("XCALIBER_STRIPE_PRICE_CLINIC_MONTHLY", ""),
            "seat_price": env_str("XCALIBER_STRIPE_PRICE_CLINIC_SEAT", ""),
            "seat_overage": env_choice("XCALIBER_BILLING_CLINIC_SEAT_OVERAGE", _SEAT_OVERAGE, "prorate"),
        },
        "pay-per-read": {
            "name": "Pay per read",
            "audience": "clinic",
            "kind": "metered",
            "seats_included": env_int("XCALIBER_BILLING_METERED_SEATS_INCLUDED", 3, minimum=1),
            "price": env_str("XCALIBER_STRIPE_PRICE_PER_READ", ""),
            "seat_price": env_str("XCALIBER_STRIPE_PRICE_PER_READ_SEAT", ""),
            "seat_overage": env_choice("XCALIBER_BILLING_METERED_SEAT_OVERAGE", _SEAT_OVERAGE, "refuse"),
        },
        "hospital": {
            "name": "Referral hospital",
            "audience": "hospital",
            "kind": "flat",
            "seats_included": env_int("XCALIBER_BILLING_HOSPITAL_SEATS_INCLUDED", 10, minimum=1),
            "price": env_str("XCALIBER_STRIPE_PRICE_HOSPITAL", ""),
            "seat_price": env_str("XCALIBER_STRIPE_PRICE_HOSPITAL_SEAT", ""),
            "seat_overage": env_choice("XCALIBER_BILLING_HOSPITAL_SEAT_OVERAGE", _SEAT_OVERAGE, "prorate"),
        },
    },
}
CELERY_BEAT_SCHEDULE["billing-usage-report"] = {
    "task": "billing.tasks.usage_report_task",
    "schedule": float(env_int("XCALIBER_BILLING_USAGE_REPORT_SECONDS", 60, minimum=5)),
}

# Production hardening and observability (xcaliber/middleware.py, xcaliber/observability.py,
# xcaliber/logs.py, xcaliber/reporting.py; README "Production deployment").
# Request ids, access log and HTTP metrics wrap everything; CORS answers before CommonMiddleware; the
# content security policy is set on every response (the docs pages' inline scripts allowed by hash).
from xcaliber.logs import logging_config  # noqa: E402  # this block is appended; its imports stay with it
from xcaliber.reporting import sentry_init  # noqa: E402

MIDDLEWARE.insert(0, "xcaliber.middleware.RequestContextMiddleware")
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.common.CommonMiddleware"), "corsheaders.middleware.CorsMiddleware"
)
MIDDLEWARE.append("xcaliber.middleware.ContentSecurityPolicyMiddleware")
INSTALLED_APPS.append("corsheaders")

# CORS: browser origins (scheme://host[:port]) of web clients allowed to call the API and DICOMweb.
# Credentials are bearer tokens and API keys in headers, never cookies, so no credentialed CORS.
CORS_ALLOWED_ORIGINS = env_list("XCALIBER_CORS_ALLOWED_ORIGINS", ())
CORS_URLS_REGEX = r"^/(api|dicom-web)/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "x-clinic",
    "x-request-id",
)
CORS_EXPOSE_HEADERS = (
    "x-request-id",
    "idempotent-replayed",
    "retry-after",
    "location",
    "content-disposition",
)
CORS_PREFLIGHT_MAX_AGE = 3600

# HTTPS. The redirect and HSTS default to on when the public URL is https (a deployment that serves plain
# http on loopback, like the e2e stacks, keeps working); the probes and /metrics are exempt so kubelet
# and Prometheus can use plain http inside the cluster. X-Forwarded-Proto is trusted only from a proxy
# the operator declared (XCALIBER_TRUSTED_PROXY_COUNT > 0, or XCALIBER_TRUST_FORWARDED_PROTO).
_public_https = XCALIBER_PUBLIC_URL.lower().startswith("https://")
if PRODUCTION:
    if env_bool("XCALIBER_TRUST_FORWARDED_PROTO", XCALIBER["TRUSTED_PROXY_COUNT"] > 0):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    elif "SECURE_PROXY_SSL_HEADER" in globals():
        del SECURE_PROXY_SSL_HEADER  # Django's default (None): a direct client cannot claim https
    SECURE_SSL_REDIRECT = env_bool("XCALIBER_SSL_REDIRECT", _public_https)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("XCALIBER_HSTS_SECONDS", 31_536_000 if _public_https else 0, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("XCALIBER_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("XCALIBER_HSTS_PRELOAD", False)
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    CSRF_COOKIE_SECURE = True
    CSRF_COOKIE_HTTPONLY = True
    CSRF_TRUSTED_ORIGINS = [XCALIBER_PUBLIC_URL.rstrip("/")] if _public_https else []
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Metrics: GET /metrics with "Authorization: Bearer <token>"; without a token the endpoint is a 404.
XCALIBER_METRICS_TOKEN = env_secret("XCALIBER_METRICS_TOKEN")
if XCALIBER_METRICS_TOKEN is not None and len(XCALIBER_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("XCALIBER_METRICS_TOKEN must be at least 16 characters")
XCALIBER_METRICS_WINDOW_SECONDS = env_int("XCALIBER_METRICS_WINDOW_SECONDS", 300, minimum=10, maximum=86_400)

# Logs: "json" (one object per line with request_id and clinic_id; the production default) or "plain".
XCALIBER_LOG_FORMAT = env_choice("XCALIBER_LOG_FORMAT", ("plain", "json"), "json" if PRODUCTION else "plain")
LOGGING = logging_config(log_format=XCALIBER_LOG_FORMAT, level=env_str("XCALIBER_LOG_LEVEL", "INFO"))
# Celery would install its own root handler and format; the worker logs through LOGGING like the rest.
CELERY_WORKER_HIJACK_ROOT_LOGGER = XCALIBER_LOG_FORMAT == "plain"

# Sentry, when SENTRY_DSN is set and sentry-sdk is installed (see xcaliber/reporting.py).
sentry_init(environ=os.environ, environment=XCALIBER_ENV)
