"""Settings for sendmsg, every one read from the environment with a working default.

The defaults run the whole platform on one machine with nothing else installed: SQLite in
the data folder, django-q2 on its ORM broker, secrets and a self-signed TLS pair
generated into the data folder on first use. `deploy/env.example` lists every variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from sendmsg import log_context
from sendmsg.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("SENDMSG_DATA_DIR", str(BASE_DIR / "data"))).resolve()

DEBUG = env_bool("SENDMSG_DEBUG", False)
SECRET_KEY = env_secret("SENDMSG_SECRET_KEY", data_dir=DATA_DIR, filename="secret_key", nbytes=48)
# Encrypts DKIM private keys and webhook signing secrets at rest (Fernet: AES-128-CBC +
# HMAC-SHA256).
DKIM_ENCRYPTION_KEY = env_secret(
    "SENDMSG_DKIM_ENCRYPTION_KEY", data_dir=DATA_DIR, filename="dkim_encryption_key"
)
# Keys the HMAC-SHA256 of SMTP passwords and API keys, and signs VERP bounce tokens.
HASH_KEY = env_secret("SENDMSG_HASH_KEY", data_dir=DATA_DIR, filename="hash_key")

SENDMSG_HOSTNAME = env_str("SENDMSG_HOSTNAME", "sendmsg.localhost")
SENDMSG_RETURN_PATH_DOMAIN = env_str("SENDMSG_RETURN_PATH_DOMAIN", f"rp.{SENDMSG_HOSTNAME}")
SENDMSG_SPF_INCLUDE = env_str("SENDMSG_SPF_INCLUDE", f"spf.{SENDMSG_RETURN_PATH_DOMAIN}")
# Where feedback loops (ARF spam complaints, RFC 5965) are registered to send; the inbound
# MX accepts it besides the VERP return paths (reputation/complaints.py).
SENDMSG_COMPLAINT_ADDRESS = env_str(
    "SENDMSG_COMPLAINT_ADDRESS", f"fbl@{SENDMSG_RETURN_PATH_DOMAIN}"
)
# Label of each tenant domain's return-path host: rp.example.com CNAME <return-path domain>.
SENDMSG_RETURN_PATH_LABEL = env_str("SENDMSG_RETURN_PATH_LABEL", "rp")
# Where the web process is reached from outside (scheme and host, no path): one-click
# unsubscribe links (delivery/unsubscribe.py) point at <this>/u/<token>.
SENDMSG_PUBLIC_URL = env_str("SENDMSG_PUBLIC_URL", f"https://{SENDMSG_HOSTNAME}")
# Mail the platform sends itself (password resets, invitations) goes through the same
# accept path as a tenant's, from this address on the domain of the platform's own tenant,
# which `manage.py bootstrap` creates (sendmsg/platform_mail.py).
SENDMSG_PLATFORM_FROM = env_str("SENDMSG_PLATFORM_FROM", f"sendmsg@{SENDMSG_HOSTNAME}")
SENDMSG_PLATFORM_TENANT = env_str("SENDMSG_PLATFORM_TENANT", "platform")
EMAIL_BACKEND = "sendmsg.platform_mail.EmailBackend"
DEFAULT_FROM_EMAIL = f"sendmsg <{SENDMSG_PLATFORM_FROM}>"
SERVER_EMAIL = SENDMSG_PLATFORM_FROM
# Accounts (domains/accounts.py): anyone may sign up and get a tenant, or (false) people
# join only by invitation. Sign-ups and password reset requests per client address and
# hour; days an invitation link stays valid.
SENDMSG_OPEN_SIGNUP = env_bool("SENDMSG_OPEN_SIGNUP", True)
SENDMSG_SIGNUP_PER_HOUR = env_int("SENDMSG_SIGNUP_PER_HOUR", 10)
SENDMSG_PASSWORD_RESET_PER_HOUR = env_int("SENDMSG_PASSWORD_RESET_PER_HOUR", 10)
SENDMSG_INVITATION_DAYS = env_int("SENDMSG_INVITATION_DAYS", 7)

ALLOWED_HOSTS = env_list("SENDMSG_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("SENDMSG_CSRF_TRUSTED_ORIGINS", [])
# Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed: a
# request from one gets REMOTE_ADDR from the header's rightmost untrusted hop
# (sendmsg/proxy.py). Empty: REMOTE_ADDR is the peer, whatever the header says.
SENDMSG_TRUSTED_PROXIES = env_list("SENDMSG_TRUSTED_PROXIES", [])

SENDMSG_BIND = env_str("SENDMSG_BIND", "127.0.0.1")
SENDMSG_WEB_PORT = env_int("SENDMSG_WEB_PORT", 8000)
SENDMSG_SUBMISSION_PORT = env_int("SENDMSG_SUBMISSION_PORT", 2587)
SENDMSG_SUBMISSION_TLS_PORT = env_int("SENDMSG_SUBMISSION_TLS_PORT", 2465)
SENDMSG_INBOUND_PORT = env_int("SENDMSG_INBOUND_PORT", 2525)
SENDMSG_WEB_WORKERS = env_int("SENDMSG_WEB_WORKERS", 2)

SENDMSG_TLS_CERT = env_str("SENDMSG_TLS_CERT", str(DATA_DIR / "tls" / "cert.pem"))
SENDMSG_TLS_KEY = env_str("SENDMSG_TLS_KEY", str(DATA_DIR / "tls" / "key.pem"))

# Resolvers as "host" or "host:port"; empty means the system's (/etc/resolv.conf).
SENDMSG_DNS_SERVERS = env_list("SENDMSG_DNS_SERVERS", [])
SENDMSG_DNS_TIMEOUT = float(env_str("SENDMSG_DNS_TIMEOUT", "5"))

SENDMSG_RELAY_PORT = env_int("SENDMSG_RELAY_PORT", 25)
SENDMSG_RELAY_ALLOW_PRIVATE = env_bool("SENDMSG_RELAY_ALLOW_PRIVATE", False)
# Per-command SMTP client timeout (seconds); RFC 5321 suggests minutes, we keep it short
# so a stuck MX cannot hold a worker past django-q2's task timeout (see sendmsg/checks.py).
SENDMSG_RELAY_TIMEOUT = env_int("SENDMSG_RELAY_TIMEOUT", 60)
# A connection to an MX host carries consecutive messages (as Postfix's connection cache):
# at most this many transactions, and only if idle no longer than this many seconds.
SENDMSG_RELAY_REUSE_LIMIT = env_int("SENDMSG_RELAY_REUSE_LIMIT", 100)
SENDMSG_RELAY_REUSE_IDLE_SECONDS = env_float("SENDMSG_RELAY_REUSE_IDLE_SECONDS", 5.0)
# A delivery worker writes outcomes (delivered, deferred, bounced) this many at a time.
SENDMSG_OUTCOME_BATCH = env_int("SENDMSG_OUTCOME_BATCH", 20)
# Verified TLS (MTA-STS policy fetches, MX hosts under an enforce policy or a sending domain
# that requires TLS): CA bundle (PEM) to trust; empty means the system's CAs.
SENDMSG_TLS_CA_FILE = env_str("SENDMSG_TLS_CA_FILE", "")
# MTA-STS (RFC 8461) policy fetches: HTTPS port of mta-sts.<domain> (443; tests use
# another), and the seconds one whole fetch may take (connect, TLS, request, body).
SENDMSG_MTA_STS_PORT = env_int("SENDMSG_MTA_STS_PORT", 443)
SENDMSG_MTA_STS_TIMEOUT = env_int("SENDMSG_MTA_STS_TIMEOUT", 10)
SENDMSG_MESSAGE_SIZE_LIMIT = env_int("SENDMSG_MESSAGE_SIZE_LIMIT", 25 * 1024 * 1024)
SENDMSG_MAX_RECIPIENTS = env_int("SENDMSG_MAX_RECIPIENTS", 100)
# Messages per hour a tenant may send unless an operator sets its own plan rate.
SENDMSG_DEFAULT_PLAN_RATE = env_int("SENDMSG_DEFAULT_PLAN_RATE", 10000)
# Seconds a process trusts what it read of API keys, tenants' flags and verified domains
# (sendmsg/read_cache.py); 0 reads them for every message.
SENDMSG_STATE_CACHE_SECONDS = env_float("SENDMSG_STATE_CACHE_SECONDS", 1.0)
# Permits a process leases at once from a tenant's hourly rate (reputation/gate.py).
SENDMSG_QUOTA_LEASE = env_int("SENDMSG_QUOTA_LEASE", 50)
# Warm-up of a new sending domain: its cap on messages for each day from the day it was
# first verified (day 1, day 2, ...); none after the last. Empty: no warm-up.
SENDMSG_WARMUP_DAILY_CAPS = [
    int(x)
    for x in env_list(
        "SENDMSG_WARMUP_DAILY_CAPS",
        "500,1000,2000,5000,10000,20000,50000,100000,200000,500000".split(","),
    )
]
# Reputation levels (reputation/levels.py, DESIGN.md): rates over WINDOW days, the bounce
# rate from BOUNCE_SAMPLE delivered or bounced, the complaint rate from COMPLAINT_SAMPLE
# delivered and COMPLAINT_MIN complaints. A sender is at the first level (1 to 4) whose
# limits (percent) both rates are under, else at 5; levels 1 to 4 send at these
# fractions of the plan rate.
SENDMSG_REPUTATION_WINDOW_DAYS = env_int("SENDMSG_REPUTATION_WINDOW_DAYS", 7)
SENDMSG_REPUTATION_BOUNCE_SAMPLE = env_int("SENDMSG_REPUTATION_BOUNCE_SAMPLE", 100)
SENDMSG_REPUTATION_COMPLAINT_SAMPLE = env_int("SENDMSG_REPUTATION_COMPLAINT_SAMPLE", 1000)
SENDMSG_REPUTATION_COMPLAINT_MIN = env_int("SENDMSG_REPUTATION_COMPLAINT_MIN", 3)
SENDMSG_LEVEL_BOUNCE_LIMITS = [
    float(x) for x in env_list("SENDMSG_LEVEL_BOUNCE_LIMITS", ["2", "4", "5", "10"])
]
SENDMSG_LEVEL_COMPLAINT_LIMITS = [
    float(x) for x in env_list("SENDMSG_LEVEL_COMPLAINT_LIMITS", ["0.05", "0.1", "0.3", "0.5"])
]
SENDMSG_LEVEL_RATE_FACTORS = [
    float(x) for x in env_list("SENDMSG_LEVEL_RATE_FACTORS", ["1", "1", "0.5", "0.1"])
]
if not (
    len(SENDMSG_LEVEL_BOUNCE_LIMITS)
    == len(SENDMSG_LEVEL_COMPLAINT_LIMITS)
    == len(SENDMSG_LEVEL_RATE_FACTORS)
    == 4
):
    raise ValueError(
        "SENDMSG_LEVEL_BOUNCE_LIMITS, SENDMSG_LEVEL_COMPLAINT_LIMITS and "
        "SENDMSG_LEVEL_RATE_FACTORS each list four values, for levels 1 to 4"
    )
# SMTP submission limits: idle timeout (seconds, RFC 5321 §4.5.3.2.7), open connections per
# client address (per process), messages and recipients per session.
SENDMSG_SMTP_TIMEOUT = env_int("SENDMSG_SMTP_TIMEOUT", 300)
# Processes serving the SMTP listeners (one Python process uses one core); they share
# the per-address connection limit below.
SENDMSG_SMTP_PROCESSES = env_int("SENDMSG_SMTP_PROCESSES", min(os.cpu_count() or 1, 4))
SENDMSG_SMTP_MAX_CONNECTIONS_PER_ADDRESS = env_int("SENDMSG_SMTP_MAX_CONNECTIONS_PER_ADDRESS", 50)
SENDMSG_SMTP_MAX_MESSAGES_PER_SESSION = env_int("SENDMSG_SMTP_MAX_MESSAGES_PER_SESSION", 1000)
SENDMSG_SMTP_MAX_RECIPIENTS_PER_SESSION = env_int("SENDMSG_SMTP_MAX_RECIPIENTS_PER_SESSION", 10000)
# Failed SMTP AUTH (delivery/auth_throttle.py): answers slow down from the Nth failure of
# an address or username (DELAY seconds, doubling), and at LOCKOUT_AFTER failures AUTH is
# locked for LOCKOUT_SECONDS (also how long failures are remembered).
SENDMSG_AUTH_SLOWDOWN_AFTER = env_int("SENDMSG_AUTH_SLOWDOWN_AFTER", 3)
SENDMSG_AUTH_DELAY_SECONDS = float(env_str("SENDMSG_AUTH_DELAY_SECONDS", "1"))
SENDMSG_AUTH_LOCKOUT_AFTER = env_int("SENDMSG_AUTH_LOCKOUT_AFTER", 10)
SENDMSG_AUTH_LOCKOUT_SECONDS = env_int("SENDMSG_AUTH_LOCKOUT_SECONDS", 900)
# How long a worker holds a claimed recipient before the sweeper may hand it to another.
SENDMSG_LEASE_SECONDS = env_int("SENDMSG_LEASE_SECONDS", 15 * 60)
# How long a message is retried before its undelivered recipients expire (Postfix's
# maximal_queue_lifetime), and the retry delays: the first, doubling up to the cap.
SENDMSG_MESSAGE_EXPIRY_HOURS = env_int("SENDMSG_MESSAGE_EXPIRY_HOURS", 5 * 24)
SENDMSG_RETRY_FIRST_SECONDS = env_int("SENDMSG_RETRY_FIRST_SECONDS", 300)
SENDMSG_RETRY_MAX_SECONDS = env_int("SENDMSG_RETRY_MAX_SECONDS", 4000)
SENDMSG_SWEEP_BATCH = env_int("SENDMSG_SWEEP_BATCH", 1000)
# Delivery wake-ups are gathered for WINDOW seconds, then sent as tasks of up to CHUNK
# messages each (delivery/wake.py). A task's claim, key and route lookups and outcome
# writes are shared by its messages. With 0.25 s and 50 (were 0.1 s and 20) one worker's
# end-to-end ratio to Postfix went from 0.46 to 0.55 in back-to-back runs of
# bench/e2e_relay.py --workers 1, for at most 0.15 s more before a message's wake-up.
SENDMSG_WAKE_WINDOW = env_float("SENDMSG_WAKE_WINDOW", 0.25)
SENDMSG_WAKE_CHUNK = env_int("SENDMSG_WAKE_CHUNK", 50)
# Days a retired DKIM key's record stays listed before it may be removed from DNS.
SENDMSG_DKIM_RETIRE_GRACE_DAYS = env_int("SENDMSG_DKIM_RETIRE_GRACE_DAYS", 7)
# Domain re-checks: verified domains every RECHECK minutes, pending ones more often.
SENDMSG_DOMAIN_RECHECK_MINUTES = env_int("SENDMSG_DOMAIN_RECHECK_MINUTES", 60)
SENDMSG_PENDING_RECHECK_MINUTES = env_int("SENDMSG_PENDING_RECHECK_MINUTES", 5)
# Webhooks (delivery/webhooks/). Targets on private, loopback, link-local and other
# non-public addresses are refused unless ALLOW_PRIVATE (tests only). TIMEOUT bounds each
# request in all (seconds). Retries: FIRST seconds, doubling up to MAX, for RETRY_HOURS;
# then the delivery is failed. A dispatcher run sends for at most RUN_SECONDS, CONCURRENCY
# requests at a time. An event id missing from the stream (its transaction not committed
# yet) is waited for GAP_SECONDS. Finished deliveries are logged for LOG_DAYS.
SENDMSG_WEBHOOK_ALLOW_PRIVATE = env_bool("SENDMSG_WEBHOOK_ALLOW_PRIVATE", False)
SENDMSG_WEBHOOK_TIMEOUT = env_int("SENDMSG_WEBHOOK_TIMEOUT", 10)
SENDMSG_WEBHOOK_RETRY_FIRST_SECONDS = env_int("SENDMSG_WEBHOOK_RETRY_FIRST_SECONDS", 60)
SENDMSG_WEBHOOK_RETRY_MAX_SECONDS = env_int("SENDMSG_WEBHOOK_RETRY_MAX_SECONDS", 3600)
SENDMSG_WEBHOOK_RETRY_HOURS = env_int("SENDMSG_WEBHOOK_RETRY_HOURS", 24)
SENDMSG_WEBHOOK_RUN_SECONDS = env_int("SENDMSG_WEBHOOK_RUN_SECONDS", 50)
SENDMSG_WEBHOOK_CONCURRENCY = env_int("SENDMSG_WEBHOOK_CONCURRENCY", 4)
SENDMSG_WEBHOOK_GAP_SECONDS = env_int("SENDMSG_WEBHOOK_GAP_SECONDS", 120)
SENDMSG_WEBHOOK_MAX_ENDPOINTS = env_int("SENDMSG_WEBHOOK_MAX_ENDPOINTS", 20)
SENDMSG_WEBHOOK_LOG_DAYS = env_int("SENDMSG_WEBHOOK_LOG_DAYS", 30)
# Suppression lists (reputation/suppressions.py): rows one import may have (a CSV file or
# a JSON list); the upload may have up to 1 KiB per row.
SENDMSG_SUPPRESSION_IMPORT_ROWS = env_int("SENDMSG_SUPPRESSION_IMPORT_ROWS", 100_000)
# Bounces (reputation/bounce_processing.py): a hard bounce suppresses its address at once;
# soft bounces do when COUNT of them (the recipient bounced for good, not retried) come
# for one address within DAYS. COUNT 0 turns that off.
SENDMSG_SOFT_BOUNCE_SUPPRESS_COUNT = env_int("SENDMSG_SOFT_BOUNCE_SUPPRESS_COUNT", 5)
SENDMSG_SOFT_BOUNCE_SUPPRESS_DAYS = env_int("SENDMSG_SOFT_BOUNCE_SUPPRESS_DAYS", 7)
# Message log retention (delivery/retention.py, hourly): message bodies are removed after
# BODY days (the headers stay), whole messages with their recipients and events after
# METADATA days; never while a recipient is still queued, deferred, sending or held.
# 0 keeps them forever.
SENDMSG_BODY_RETENTION_DAYS = env_int("SENDMSG_BODY_RETENTION_DAYS", 30)
SENDMSG_METADATA_RETENTION_DAYS = env_int("SENDMSG_METADATA_RETENTION_DAYS", 90)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "sendmsg",  # before django_q: its qcluster command replaces django-q2's
    "django_q",
    "domains",
    "delivery",
    "reputation",
]

MIDDLEWARE = [
    "sendmsg.proxy.TrustedProxyMiddleware",  # first: everything after sees the client
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "sendmsg.urls"
WSGI_APPLICATION = "sendmsg.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "domains.context.current_tenant",
            ],
        },
    },
]


def _database(url: str) -> dict:
    config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    # Seconds a write waits for another's lock before failing (SMTP 451 4.3.0, HTTP 503):
    # a client retries later instead of hanging.
    lock_timeout = env_int("SENDMSG_DB_LOCK_TIMEOUT", 20)
    if config["ENGINE"] == "django.db.backends.postgresql":
        config.setdefault("OPTIONS", {})["options"] = f"-c lock_timeout={lock_timeout * 1000}"
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several processes (web, SMTP, workers) write one file: IMMEDIATE transactions
        # take the write lock up front instead of failing when a read turns into a write;
        # synchronous=FULL so a 250 after DATA survives a power loss.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": lock_timeout,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        }
        config["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
    return config


# Shared by every process on a host (rate limits): files in the data folder by default,
# or a redis:// URL when processes run on several hosts.
SENDMSG_CACHE = env_str("SENDMSG_CACHE", "file")
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
        if SENDMSG_CACHE == "file"
        else {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": SENDMSG_CACHE}
    )
}
# Public deliverability checks per client address and minute.
SENDMSG_PUBLIC_CHECK_PER_MINUTE = env_int("SENDMSG_PUBLIC_CHECK_PER_MINUTE", 10)

DATABASES = {
    "default": _database(env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'sendmsg.sqlite3'}"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# Production hardening; `manage.py check --deploy` is clean when SENDMSG_SECURE=true.
SECURE = env_bool("SENDMSG_SECURE", False)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
# Probes and scrapers speak plain HTTP to the process itself, behind the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["delivery.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["delivery.api.auth.HasApiKey"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # One error shape everywhere: {"error": {"code", "message", "field"?}}
    "EXCEPTION_HANDLER": "delivery.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "sendmsg API",
    "DESCRIPTION": "Send mail, manage sending domains and follow every message's events.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Event types appear in several components (events API, a message's recipients).
    "ENUM_NAME_OVERRIDES": {
        "EventTypeEnum": "delivery.models.EventType",
        # A recipient's state, apart from a DKIM key's (also a field named "state").
        "RecipientStateEnum": "delivery.models.RecipientState",
        # A suppression's reason, apart from any other field named "reason".
        "SuppressionReasonEnum": "reputation.models.SuppressionReason",
    },
}

# django-q2: tasks are wake-ups, the database rows are the truth. A task's timeout covers
# the worst SMTP transaction (several commands at SENDMSG_RELAY_TIMEOUT each, for each MX
# host tried); retry must exceed timeout or a slow task would run twice at once.
Q_TIMEOUT = env_int("SENDMSG_TASK_TIMEOUT", SENDMSG_RELAY_TIMEOUT * 8)
SENDMSG_BROKER = env_str("SENDMSG_BROKER", "orm")
Q_CLUSTER: dict = {
    "name": "sendmsg",
    "workers": env_int("SENDMSG_WORKERS", 2),
    "timeout": Q_TIMEOUT,
    "retry": Q_TIMEOUT + 60,
    # Failed tasks are acknowledged: the sweeper re-dispatches what is due from the
    # database, so the broker never has to redeliver forever.
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": -1,
    "poll": 0.2,
    "catch_up": False,
    "label": "Queue",
}
if SENDMSG_BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
else:
    Q_CLUSTER["redis"] = SENDMSG_BROKER

# Every line carries the ids of the work in hand (sendmsg/log_context.py): `plain` puts
# them after the message as key=value, `json` writes one object a line (for production,
# where a log shipper reads them).
SENDMSG_LOG_FORMAT = env_str("SENDMSG_LOG_FORMAT", "plain")
if SENDMSG_LOG_FORMAT not in log_context.FORMATS:
    formats = " or ".join(log_context.FORMATS)
    raise ImproperlyConfigured(f"SENDMSG_LOG_FORMAT must be {formats}, got {SENDMSG_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"log_context": {"()": "sendmsg.log_context.ContextFilter"}},
    "formatters": {
        "plain": {"()": "sendmsg.log_context.PlainFormatter"},
        "json": {"()": "sendmsg.log_context.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": SENDMSG_LOG_FORMAT,
            "filters": ["log_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("SENDMSG_LOG_LEVEL", "INFO")},
    "loggers": {"django": {"level": "WARNING"}, "mail.log": {"level": "WARNING"}},
}

# /metrics (sendmsg/health_views.py) answers loopback clients only, unless this token is
# set: then any client that sends it as ``Authorization: Bearer <token>``.
SENDMSG_METRICS_TOKEN = env_str("SENDMSG_METRICS_TOKEN", "")
