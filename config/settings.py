"""Certwright's settings: everything that differs between deployments comes from the environment.

`.env.example` documents each variable. Validation happens here, at import, so that every process
(web, worker, beat, flower, management commands) refuses to start with a clear list of what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

import environ

from config.env import EnvReader
from config.issuers import DEFAULT_NAME as ISSUER_DEFAULT_NAME
from config.issuers import IssuerSetting, parse_issuers

BASE_DIR = Path(__file__).resolve().parent.parent

env = EnvReader()

DEBUG = env.bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", required=not DEBUG) or "insecure-debug-only-secret-key"
if not DEBUG and SECRET_KEY and len(SECRET_KEY) < 32:
    env.fail("SECRET_KEY", "must be at least 32 characters when DEBUG is off")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    env.fail("ALLOWED_HOSTS", "is required when DEBUG is off (comma-separated host names of the web app)")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")

_database_url = env.url("DATABASE_URL", ("postgres", "postgresql", "pgsql"), required=True)
if _database_url:
    _database = environ.Env.db_url_config(_database_url)
    _database["ENGINE"] = "django.db.backends.postgresql"
    _database["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
    _database["CONN_HEALTH_CHECKS"] = True
    _database.setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
    # No JIT compilation: Certwright's statements are short, and compiling cost the overview's
    # aggregates 7 to 28 ms each at a million rows (bench/overview.py), for nothing back.
    _database["OPTIONS"]["options"] = "-c jit=off"
else:
    _database = {"ENGINE": "django.db.backends.postgresql", "NAME": "unset"}
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_BROKER_URL = env.url("CELERY_BROKER_URL", ("redis", "rediss"), required=True)
QUOTA_REDIS_URL = env.url("QUOTA_REDIS_URL", ("redis", "rediss"), required=True)

# ACME. No default directory on purpose: a deployment must say which CA it talks to, either in
# ACME_DIRECTORY_URL (one issuer, with ACME_CA_BUNDLE, ACME_CAA_IDENTITY and EXTRA_TRUSTED_ROOTS)
# or in ACME_ISSUERS (several, in order: config/issuers.py), whose first is then the primary.
_issuers_text = env.str("ACME_ISSUERS")
ACME_DIRECTORY_URL = env.url("ACME_DIRECTORY_URL", ("https", "http"), required=not _issuers_text)
ACME_CA_BUNDLE = env.path("ACME_CA_BUNDLE")
ACME_CONTACT_EMAIL = env.str("ACME_CONTACT_EMAIL")
if ACME_CONTACT_EMAIL and "@" not in ACME_CONTACT_EMAIL:
    env.fail("ACME_CONTACT_EMAIL", f"must be an e-mail address, not {ACME_CONTACT_EMAIL!r}")

# The key of every new certificate: a fresh ECDSA P-256 key by default, or RSA 2048.
# The CA profile new orders ask for (Let's Encrypt: classic, tlsserver, shortlived); empty: the CA's
# default. A domain may choose another; either must be one the CA's directory offers.
ACME_PROFILE = (env.str("ACME_PROFILE", "") or "").strip()
ACME_KEY_TYPE = env.str("ACME_KEY_TYPE", "ec256")
if ACME_KEY_TYPE not in ("ec256", "rsa2048"):
    env.fail("ACME_KEY_TYPE", f"must be ec256 or rsa2048, not {ACME_KEY_TYPE!r}")
# The HTTP-01 self check (workers/http01_self_check.py): before telling the CA to validate, the
# worker fetches the challenge from the name's addresses on this port (the port the CA validates
# on: 80 at Let's Encrypt), and holds its answer while the platform does not serve it, for at most
# this long of the order's life (0: no check, answer at once).
HTTP01_SELF_CHECK_PORT = env.int("HTTP01_SELF_CHECK_PORT", 80, minimum=1)
if HTTP01_SELF_CHECK_PORT > 65535:
    env.fail("HTTP01_SELF_CHECK_PORT", f"must be a TCP port (1 to 65535), not {HTTP01_SELF_CHECK_PORT}")
HTTP01_SELF_CHECK_SECONDS = env.int("HTTP01_SELF_CHECK_SECONDS", 300, minimum=0)
# A step holds its order this long; after that the re-drive assumes the worker died and continues.
ACME_ORDER_LEASE_SECONDS = env.int("ACME_ORDER_LEASE_SECONDS", 120, minimum=2)
# Polls of the CA start at the first value and double up to the second (Retry-After wins if longer).
ACME_POLL_INITIAL_SECONDS = env.float("ACME_POLL_INITIAL_SECONDS", 0.2, minimum=0.05)
ACME_POLL_MAX_SECONDS = env.float("ACME_POLL_MAX_SECONDS", 10.0, minimum=0.1)
# An order that is not valid this long after it was placed is given up (and retried with backoff).
ACME_ORDER_TIMEOUT_SECONDS = env.int("ACME_ORDER_TIMEOUT_SECONDS", 1800, minimum=10)
# How many times one step is retried after a bad nonce or a network error before the order fails.
ACME_STEP_RETRIES = env.int("ACME_STEP_RETRIES", 8, minimum=1)
# PEM file of roots trusted besides certifi's public ones: issued chains (and, later, uploaded
# ones) must validate up to one of them. Pebble's root in development and tests.
EXTRA_TRUSTED_ROOTS = env.str("EXTRA_TRUSTED_ROOTS")

DNS_RESOLVERS = env.host_ports("DNS_RESOLVERS", required=True)
# Per-query timeout and overall lifetime of a DNS lookup, in seconds.
DNS_TIMEOUT_SECONDS = env.float("DNS_TIMEOUT_SECONDS", 2.0, minimum=0.1)
# A claimed domain check holds the domain this long; a check that dies, or is lost with the broker,
# is retried after it (at the next sweep). Longer than a check task may run (its time limit, 120 s),
# short enough that a broker restart is recovered within 5 minutes (bench/faults.py).
DOMAIN_CHECK_LEASE_SECONDS = env.int("DOMAIN_CHECK_LEASE_SECONDS", 150, minimum=2)
# Domains one sweep claims at most (the rest wait for the next tick), and domains per check task.
DOMAIN_SWEEP_BATCH = env.int("DOMAIN_SWEEP_BATCH", 5000, minimum=1)
DOMAIN_SWEEP_MAX = env.int("DOMAIN_SWEEP_MAX", 200000, minimum=1)
DOMAIN_CHECK_CHUNK = env.int("DOMAIN_CHECK_CHUNK", 1000, minimum=1)
# Certificates one renewal claim statement takes, and at most one renewal sweep tick.
RENEWAL_SWEEP_BATCH = env.int("RENEWAL_SWEEP_BATCH", 1000, minimum=1)
RENEWAL_SWEEP_MAX = env.int("RENEWAL_SWEEP_MAX", 50000, minimum=1)
# ACME Renewal Information (RFC 9773): the longest time between two checks of a certificate's
# window (the CA's Retry-After, clamped to between a minute and a day, when shorter; this when it
# sends none or after a lasting error; Let's Encrypt asks for at least twice a day), how many
# certificates one sweep claims per statement and per tick, and how many requests one task keeps
# in flight.
ARI_CHECK_INTERVAL_SECONDS = env.int("ARI_CHECK_INTERVAL_SECONDS", 21600, minimum=10)
ARI_SWEEP_BATCH = env.int("ARI_SWEEP_BATCH", 2000, minimum=1)
ARI_SWEEP_MAX = env.int("ARI_SWEEP_MAX", 200000, minimum=1)
ARI_CONCURRENCY = env.int("ARI_CONCURRENCY", 64, minimum=1)
# Webhooks (issue 16). Sent only to public addresses (domains/webhook_targets.py) unless in one of
# WEBHOOK_ALLOWED_NETWORKS (comma-separated CIDRs: an internal receiver); https only unless
# WEBHOOK_ALLOW_HTTP. A request gets WEBHOOK_TIMEOUT_SECONDS in all; a delivery is retried with
# backoff for WEBHOOK_RETRY_SECONDS (3 days), an endpoint failing for WEBHOOK_DISABLE_AFTER_SECONDS
# (5 days) is disabled and its owner told; a rotated secret keeps signing for
# WEBHOOK_SECRET_OVERLAP_SECONDS. One worker process keeps WEBHOOK_CONCURRENCY requests in flight
# and claims WEBHOOK_BATCH queues (each one's next delivery) at a time; a backlog is worked by up
# to WEBHOOK_PARALLEL_RUNS processes at once.
WEBHOOK_ALLOWED_NETWORKS = env.networks("WEBHOOK_ALLOWED_NETWORKS")
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", False)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1)
WEBHOOK_RETRY_SECONDS = env.int("WEBHOOK_RETRY_SECONDS", 3 * 24 * 3600, minimum=0)
WEBHOOK_DISABLE_AFTER_SECONDS = env.int("WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 24 * 3600, minimum=60)
WEBHOOK_SECRET_OVERLAP_SECONDS = env.int("WEBHOOK_SECRET_OVERLAP_SECONDS", 24 * 3600, minimum=0)
WEBHOOK_CONCURRENCY = env.int("WEBHOOK_CONCURRENCY", 32, minimum=1)
WEBHOOK_BATCH = env.int("WEBHOOK_BATCH", 512, minimum=1)
WEBHOOK_PARALLEL_RUNS = env.int("WEBHOOK_PARALLEL_RUNS", 4, minimum=1)
# Email (issue 16): through Django's email backend, SMTP by default (EMAIL_HOST, EMAIL_PORT,
# EMAIL_USE_TLS for STARTTLS or EMAIL_USE_SSL for TLS from the start, EMAIL_HOST_USER and
# EMAIL_HOST_PASSWORD, EMAIL_TIMEOUT); EMAIL_BACKEND swaps in another (django-anymail's, the
# console's). Customers' notification mails come from DEFAULT_FROM_EMAIL; the operators' (ADMINS,
# "Name <address>" pairs separated by commas) from SERVER_EMAIL. A user's mails are gathered for
# NOTIFICATION_GATHER_SECONDS after the first event, and no two leave closer than the user's digest
# window (NOTIFICATION_DIGEST_SECONDS unless the user chose another); a mail lists at most
# NOTIFICATION_MAX_EVENTS events (and says how many more).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", 25, minimum=1)
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    env.fail(
        "EMAIL_USE_SSL", "cannot be on with EMAIL_USE_TLS: STARTTLS and TLS from the start exclude each other"
    )
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", "")
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", 30.0, minimum=1)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "Certwright <certwright@localhost>")
SERVER_EMAIL = env.str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
# Django's own mails (to ADMINS) and the notifications put this and a space before the subject.
_subject_prefix = env.str("EMAIL_SUBJECT_PREFIX", "[Certwright]")
EMAIL_SUBJECT_PREFIX = f"{_subject_prefix} " if _subject_prefix else ""
ADMINS = env.mail_pairs("ADMINS")
# Where the links in mails point (the API's and the admin's base URL), e.g. https://certs.example.com.
PUBLIC_BASE_URL = (env.url("PUBLIC_BASE_URL", ("http", "https")) or "").rstrip("/")
NOTIFICATION_GATHER_SECONDS = env.int("NOTIFICATION_GATHER_SECONDS", 60, minimum=0)
NOTIFICATION_DIGEST_SECONDS = env.int("NOTIFICATION_DIGEST_SECONDS", 3600, minimum=0)
NOTIFICATION_MAX_EVENTS = env.int("NOTIFICATION_MAX_EVENTS", 50, minimum=1)
# Revoke a deleted domain's Let's Encrypt certificates (reason cessationOfOperation): the platform
# holds their keys, and the name may move to another host.
REVOKE_ON_DELETE = env.bool("REVOKE_ON_DELETE", True)
# Domains one app may have (the API answers 409 beyond it; the admin and commands refuse too).
APP_DOMAIN_LIMIT = env.int("APP_DOMAIN_LIMIT", 100, minimum=1)
# The admin flags a domain `expiring` when its served certificate has fewer days than this left.
CERTIFICATE_EXPIRING_DAYS = env.int("CERTIFICATE_EXPIRING_DAYS", 10, minimum=1)
# Let's Encrypt certificates replaced (or no longer renewed) are deleted, keys included, this many
# days after they ended (workers/expiry.py, hourly).
CERTIFICATE_RETENTION_DAYS = env.int("CERTIFICATE_RETENTION_DAYS", 30, minimum=0)
# History kept (workers/retention.py, hourly): domain events, ended orders and settled revocations
# this many days (each domain's newest event and order stay); the routers' change feed this many
# days (a router whose cursor is older takes a snapshot again).
HISTORY_RETENTION_DAYS = env.int("HISTORY_RETENTION_DAYS", 90, minimum=1)
FEED_RETENTION_DAYS = env.int("FEED_RETENTION_DAYS", 7, minimum=1)
# Names one check task resolves at once.
DNS_CONCURRENCY = env.int("DNS_CONCURRENCY", 500, minimum=1)
# The CA identity CAA records must authorize (RFC 8659 issuer domain name).
ACME_CAA_IDENTITY = env.str("ACME_CAA_IDENTITY", "letsencrypt.org")
# Several issuers (certificates/issuers.py): CA-side failures in a row that open an issuer's
# circuit breaker, and for how long new orders then skip it before one probes it; a 429 whose
# Retry-After is further away than this sends the domain's next order to the next issuer; and how
# long a domain keeps avoiding an issuer that failed it on its side (unless one succeeds first).
ISSUER_BREAKER_FAILURES = env.int("ISSUER_BREAKER_FAILURES", 5, minimum=1)
ISSUER_BREAKER_COOLDOWN_SECONDS = env.int("ISSUER_BREAKER_COOLDOWN_SECONDS", 300, minimum=1)
ISSUER_FAILOVER_RETRY_AFTER_SECONDS = env.int("ISSUER_FAILOVER_RETRY_AFTER_SECONDS", 6 * 3600, minimum=0)
ISSUER_AVOID_SECONDS = env.int("ISSUER_AVOID_SECONDS", 86400, minimum=60)
# Whether ACME_ISSUERS lists the issuers (each with its own roots), or the ACME_* variables name one.
ACME_ISSUERS_SET = bool(_issuers_text)
if _issuers_text:
    ACME_ISSUERS, _issuer_problems = parse_issuers(_issuers_text)
    for _problem in _issuer_problems:
        env.fail("ACME_ISSUERS", _problem)
    if ACME_ISSUERS and ACME_DIRECTORY_URL and ACME_DIRECTORY_URL != ACME_ISSUERS[0].directory_url:
        env.fail(
            "ACME_DIRECTORY_URL",
            f"is {ACME_DIRECTORY_URL} but ACME_ISSUERS' first issuer ({ACME_ISSUERS[0].name}) is "
            f"{ACME_ISSUERS[0].directory_url}: leave it unset, or make them the same",
        )
    if ACME_ISSUERS:
        # The primary is what every single-CA setting names.
        ACME_DIRECTORY_URL = ACME_ISSUERS[0].directory_url
        ACME_CA_BUNDLE = ACME_ISSUERS[0].ca_bundle or ACME_CA_BUNDLE
else:
    ACME_ISSUERS = [
        IssuerSetting(
            ISSUER_DEFAULT_NAME,
            ACME_DIRECTORY_URL or "",
            (ACME_CAA_IDENTITY,),
            ACME_CA_BUNDLE or "",
            EXTRA_TRUSTED_ROOTS or "",
        )
    ]

# DNS-01 for wildcard domains (certificates/dns01.py): customers delegate _acme-challenge.<name>
# by CNAME into DNS01_ZONE, where the platform publishes each order's TXT record. Without a zone,
# wildcards wait in action_required.
DNS01_ZONE = (env.str("DNS01_ZONE", "") or "").strip().strip(".").lower()
DNS01_PROVIDER = env.str("DNS01_PROVIDER", "rfc2136")
if DNS01_PROVIDER not in ("rfc2136", "challtestsrv"):
    env.fail("DNS01_PROVIDER", f"must be rfc2136 or challtestsrv, not {DNS01_PROVIDER!r}")
DNS01_RFC2136_SERVER = env.str("DNS01_RFC2136_SERVER", "")
DNS01_RFC2136_TSIG = env.str("DNS01_RFC2136_TSIG", "")
DNS01_CHALLTESTSRV_URL = env.str("DNS01_CHALLTESTSRV_URL", "")
if DNS01_ZONE and DNS01_PROVIDER == "rfc2136" and ":" not in (DNS01_RFC2136_SERVER or ""):
    env.fail("DNS01_RFC2136_SERVER", "is required as host:port (the zone's primary) when DNS01_ZONE is set")
if DNS01_RFC2136_TSIG and DNS01_RFC2136_TSIG.count(":") < 2:
    env.fail("DNS01_RFC2136_TSIG", "must be name:algorithm:base64-secret, as tsig-keygen prints them")
if DNS01_ZONE and DNS01_PROVIDER == "challtestsrv" and not DNS01_CHALLTESTSRV_URL:
    env.fail("DNS01_CHALLTESTSRV_URL", "is required (challtestsrv's management URL) with that provider")
KEY_ENCRYPTION_KEYS = env.fernet_keys("KEY_ENCRYPTION_KEYS")

# Let's Encrypt's limits, enforced before the CA sees an order (domains/quota.py): new certificates
# per registered domain, certificates per exact set of names, new orders per ACME account, each as
# a count per period. Per-subject overrides live in the database (admin: Quota overrides).
QUOTA_REGISTERED_DOMAIN_LIMIT = env.int("QUOTA_REGISTERED_DOMAIN_LIMIT", 50, minimum=1)
QUOTA_REGISTERED_DOMAIN_PERIOD_SECONDS = env.int("QUOTA_REGISTERED_DOMAIN_PERIOD_SECONDS", 604800, minimum=1)
QUOTA_EXACT_SET_LIMIT = env.int("QUOTA_EXACT_SET_LIMIT", 5, minimum=1)
QUOTA_EXACT_SET_PERIOD_SECONDS = env.int("QUOTA_EXACT_SET_PERIOD_SECONDS", 604800, minimum=1)
QUOTA_ACCOUNT_LIMIT = env.int("QUOTA_ACCOUNT_LIMIT", 300, minimum=1)
QUOTA_ACCOUNT_PERIOD_SECONDS = env.int("QUOTA_ACCOUNT_PERIOD_SECONDS", 10800, minimum=1)
# Failed authorizations per identifier per account (Let's Encrypt: 5 an hour, one back every 12 minutes).
QUOTA_FAILED_AUTHZ_LIMIT = env.int("QUOTA_FAILED_AUTHZ_LIMIT", 5, minimum=1)
QUOTA_FAILED_AUTHZ_PERIOD_SECONDS = env.int("QUOTA_FAILED_AUTHZ_PERIOD_SECONDS", 3600, minimum=1)
# When the quota Redis cannot be reached, new certificates wait (fail closed) and are retried this
# often; renewals go ahead. QUOTA_FAIL_OPEN=true orders new certificates anyway, at the risk of
# Let's Encrypt's own limit.
QUOTA_FAIL_OPEN = env.bool("QUOTA_FAIL_OPEN", False)
QUOTA_UNAVAILABLE_RETRY_SECONDS = env.int("QUOTA_UNAVAILABLE_RETRY_SECONDS", 60, minimum=1)

FLOWER_BASIC_AUTH = env.str("FLOWER_BASIC_AUTH")
if FLOWER_BASIC_AUTH and (":" not in FLOWER_BASIC_AUTH or FLOWER_BASIC_AUTH.startswith(":")):
    env.fail("FLOWER_BASIC_AUTH", "must be user:password")

# How old beat's last tick may be before /healthz reports beat as down (three missed ticks).
HEALTH_BEAT_MAX_AGE_SECONDS = env.int("HEALTH_BEAT_MAX_AGE_SECONDS", 180, minimum=10)
# Beat's leader lease (workers/beat_lease.py): several beats may run, one leads and sends. A leader
# cut off from PostgreSQL stops sending after 3/4 of this; a standby takes over within 1.25 times
# this after the leader dies (25 s by default), or within a quarter of it after a clean stop.
BEAT_LEADER_LEASE_SECONDS = env.int("BEAT_LEADER_LEASE_SECONDS", 20, minimum=8)
HEALTH_CHECK_TIMEOUT_SECONDS = env.int("HEALTH_CHECK_TIMEOUT_SECONDS", 2, minimum=1)
# Worker processes per `celery worker` (prefork, so time limits are enforced). The work is mostly
# waiting on the CA, DNS and PostgreSQL, so more processes than cores pay off.
WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", 8, minimum=1)

# The origins (https://dashboard.example.com) that may frame the customers' Domains tab, besides its own.
DOMAINS_TAB_FRAME_ANCESTORS = env.list("DOMAINS_TAB_FRAME_ANCESTORS", [])
for _origin in DOMAINS_TAB_FRAME_ANCESTORS:
    if not re.fullmatch(r"https?://[a-z0-9.-]+(:[0-9]+)?", _origin):
        env.fail(
            "DOMAINS_TAB_FRAME_ANCESTORS",
            f"{_origin!r} is not an origin such as https://dashboard.example.com (scheme, host, port)",
        )

env.raise_if_invalid()

INSTALLED_APPS = [
    # First, so that its templates (admin/base_site.html) come before the admin's own.
    "dashboard.apps.DashboardConfig",
    # Django's admin, whose home is the operators' overview (dashboard/admin_site.py).
    "dashboard.apps.CertwrightAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_celery_beat",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "domains",
    "certificates",
    "workers",
    "api",
]

MIDDLEWARE = [
    # First: answers ACME HTTP-01 challenges for any Host, before host validation.
    "certificates.responder.Http01ResponderMiddleware",
    # Then, before anything reads a body: the API's bodies capped (413) and chunked ones buffered.
    "api.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After it, so that the Domains tab's frame-ancestors exemption is set before it answers.
    "dashboard.customer_views.embedding",
]

ROOT_URLCONF = "config.urls"
# Error reports (the DEBUG 500 page, error e-mails) hide keys, passphrases and tokens by name and
# by value, with DEBUG on too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "api.error_reports.SecretsReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "api.error_reports.SecretsExceptionReporter"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

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
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True

# Django's cache (the API's write throttle counts here): the broker's Redis, under its own prefix,
# so that every web process shares the counts.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CELERY_BROKER_URL,
        "KEY_PREFIX": "certwright-cache",
    }
}

# /metrics (api/metrics.py): open when empty (keep it on the internal network), else it asks
# for `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", "")

# The customers' Domains tab (/apps/<app>/domains/, dashboard/customer_views.py): customers sign in
# at /apps/login/; DOMAINS_TAB_FRAME_ANCESTORS (read above) may frame it.
LOGIN_URL = "/apps/login/"
LOGIN_REDIRECT_URL = "/apps/"

# The routers' endpoint (api/routers.py): how long a router may keep an answer before it
# asks again (with If-None-Match); never past the certificate's expiry.
ROUTER_CACHE_SECONDS = env.int("ROUTER_CACHE_SECONDS", 60, minimum=0)
# The routers' long-poll: how many requests of one feed process read the database at once. A change
# wakes every waiting router together; the others wait their turn instead of each opening a
# connection (a hundred routers would exhaust PostgreSQL's max_connections).
FEED_DATABASE_CONNECTIONS = env.int("FEED_DATABASE_CONNECTIONS", 8, minimum=1)

# The REST API: bearer tokens (and the admin session, for the browsable API), JSON bodies capped
# at API_MAX_BODY_BYTES, writes throttled per token at API_WRITE_RATE.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", 262144, minimum=1024)
# Any other request's body (the admin, the Domains tab, sign-in): a declared length over this is a
# 413 before the body is read. A custom certificate's upload (three files of 64 KiB) fits.
PAGE_MAX_BODY_BYTES = env.int("PAGE_MAX_BODY_BYTES", 1048576, minimum=262144)
# Django's own cap on a body read into memory must not undercut the API's.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2621440, API_MAX_BODY_BYTES)
API_WRITE_RATE = env.str("API_WRITE_RATE", "120/min")
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.WriteRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"write": API_WRITE_RATE},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Certwright API",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery. Queues: `dns` (DNS checks, I/O bound), `acme` (issuance steps), `default` (the rest).
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "workers.tasks.dns.*": {"queue": "dns"},
    "workers.tasks.acme.*": {"queue": "acme"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# Every task has a limit; tasks that need less set their own.
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
# Only idempotent tasks opt in to acks_late, one by one.
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CONCURRENCY = WORKER_CONCURRENCY
# Celery closes Django's connections around every task unless told to reuse them: a new PostgreSQL
# session per task cost more CPU than the task itself. Recycled every 2,000 tasks.
CELERY_DB_REUSE_MAX = 1000
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Kombu's Redis transport with one client per channel (workers/broker.py explains why).
CELERY_BROKER_TRANSPORT = "workers.broker:Transport"
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 5, "socket_timeout": 30}
# django-celery-beat's DatabaseScheduler, sending only while this beat holds the leader lease.
CELERY_BEAT_SCHEDULER = "workers.beat_scheduler:LeaderScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
DJANGO_CELERY_BEAT_TZ_AWARE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")},
}
