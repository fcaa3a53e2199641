"""The routers' endpoint: `GET /routers/v1/certificate?server_name=<SNI name>`.

A TLS router (the platform's edge) asks it, during or ahead of a handshake, which certificate to
present for a name, and gets the served one (certificates/serving.py decides) as one PEM body: the
leaf, its intermediates, then the private key. It is the only place a private key leaves Certwright.

The protocol is Caddy's `get_certificate http` manager's: 200 with the PEM, 204 when Certwright
serves nothing for the name (Caddy then falls back to what it has). Beyond it, for routers that
cache: `ETag` is the leaf's SHA-256 (a router holding that certificate sends `If-None-Match` and
gets a 304 without the key again), `Cache-Control: max-age` how long it may keep the answer
(ROUTER_CACHE_SECONDS, never past the certificate's expiry), and `X-Certificate-*` headers say what
it is. Authentication: an API token of a user holding the permission *Can fetch served certificates
with their private keys* (`manage.py router_token create`), as `Authorization: Bearer <token>`, or
as HTTP Basic with the token as the password (`http://router:<token>@host/...`: Caddy's URL cannot
set a header, and a password in a URL stays out of access logs, unlike a query string).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, connections
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from api.feed_wakeups import LISTENER, TOKEN
from api.models import ApiToken
from api.tokens import check_token, create_token
from certificates.feed import changes_after, feed_end, feed_horizon, snapshot
from certificates.issuers import label as issuer_label
from certificates.sealing import SecretUnreadable
from certificates.serving import served_certificate

logger = logging.getLogger(__name__)

PERMISSION = "certificates.fetch_served_keys"
# SNI carries A-labels (RFC 6066 3): letters, digits, hyphens (and underscores, which some
# clients send), at most 63 per label and 253 in all.
LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
SERVER_NAME = re.compile(rf"(?=.{{1,253}}\Z)({LABEL}\.)*{LABEL}")


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="routers"'}


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(
        message + "\n", status=status, content_type="text/plain; charset=utf-8", headers=headers
    )
    response["Cache-Control"] = "no-store"
    return response


def _token_from(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme in ("bearer", "token"):
        return credentials.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return None


# Whether a user holds PERMISSION, by user id: (answer, until when, monotonic). The token itself
# is checked on every request (a revoked token is refused at once); a permission taken away from
# the routers' user takes effect within this long in each web process.
PERMISSION_CACHE_SECONDS = 30.0
_permission_cache: dict[int, tuple[bool, float]] = {}
_permission_lock = threading.Lock()


def _may_fetch_keys(user) -> bool:
    if user.is_superuser:  # holds every permission implicitly; keys go to routers' tokens only
        return False
    now = time.monotonic()
    with _permission_lock:
        cached = _permission_cache.get(user.pk)
    if cached is not None and now < cached[1]:
        return cached[0]
    allowed = user.has_perm(PERMISSION)
    with _permission_lock:
        _permission_cache[user.pk] = (allowed, now + PERMISSION_CACHE_SECONDS)
    return allowed


def _router(request: HttpRequest) -> tuple[ApiToken | None, HttpResponse | None]:
    """The router's token row, or a 401 or 403 for a caller that is not a router."""
    token = _token_from(request)
    if token is None:
        return None, _text(
            401, "Authentication required: send a router token (Authorization: Bearer).", CHALLENGE
        )
    row = check_token(token) if token else None
    if row is None or not row.user.is_active:
        return None, _text(401, "Invalid or revoked token.", CHALLENGE)
    if not _may_fetch_keys(row.user):
        return None, _text(
            403,
            "This token may not fetch private keys: it is not a router's token "
            "(create one with `manage.py router_token create`).",
        )
    return row, None


def scope_of(row: ApiToken) -> list[int] | None:
    """The regions a router token may fetch certificates of; None: every region."""
    return list(row.regions) or None


def _server_name(request: HttpRequest) -> tuple[str | None, str]:
    raw = request.GET.get("server_name")
    if raw is None:
        return None, "The query parameter server_name (the name the TLS client asked for) is missing."
    name = raw.strip().rstrip(".").lower()
    if not name:
        return None, "server_name is empty."
    if not name.isascii():
        return None, f"server_name {raw!r} is not ASCII: SNI carries the A-label (xn--...) form of a name."
    if not SERVER_NAME.fullmatch(name):
        return None, f"server_name {raw!r} is not a host name."
    return name, ""


@require_GET
def certificate(request: HttpRequest) -> HttpResponse:
    router, refused = _router(request)
    if refused is not None:
        return refused
    name, problem = _server_name(request)
    if name is None:
        return _text(400, problem)
    now = timezone.now()
    # A name of a region outside the token's scope is, for this router, a name with nothing served.
    served = served_certificate(name, now=now, regions=scope_of(router))
    if served is None:
        # Caddy's protocol: nothing here, fall back. Asked again next time (no-store).
        response = HttpResponse(status=204)
        response["Cache-Control"] = "no-store"
        return response
    left = (served.not_after - now).total_seconds()
    headers = {
        "ETag": f'"{served.fingerprint_sha256}"',
        "Cache-Control": f"private, max-age={max(0, min(settings.ROUTER_CACHE_SECONDS, math.floor(left)))}",
        "X-Certificate-Domain": served.domain_name,
        "X-Certificate-Source": served.source,
        "X-Certificate-Not-After": served.not_after.isoformat(),
        "X-Certificate-Fingerprint": served.fingerprint_sha256,
    }
    if served.directory_url:
        # Which of the platform's CAs issued it (its name in ACME_ISSUERS).
        headers["X-Certificate-Issuer"] = issuer_label(served.directory_url)
    if_none_match = request.headers.get("If-None-Match", "")
    if headers["ETag"] in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]:
        response = HttpResponse(status=304)
    else:
        try:
            key = served.private_key.reveal().decode("ascii")
        except SecretUnreadable as exc:
            logger.error("certificate %s of %s: %s", served.pk, served.domain_name, exc)
            return _text(
                503, f"The private key of the certificate for {served.domain_name} cannot be read: {exc}."
            )
        body = served.fullchain_pem.strip() + "\n" + key.strip() + "\n"
        response = HttpResponse(body, content_type="application/x-pem-file")
    for header, value in headers.items():
        response[header] = value
    return response


MAX_CHANGES = 1000
# The longest long-poll (seconds): a router asks again after it, so a proxy between them sees
# traffic at least this often.
MAX_WAIT = 60


def _candidate(certificate) -> dict:
    return {
        "source": certificate.source,
        "fingerprint": certificate.fingerprint_sha256,
        "not_before": certificate.not_before.isoformat(),
        "not_after": certificate.not_after.isoformat(),
        # The chain, leaf first, then the key: the body the certificate endpoint answers.
        "pem": certificate.fullchain_pem.strip()
        + "\n"
        + certificate.private_key.reveal().decode("ascii").strip()
        + "\n",
    }


def _changes_query(request: HttpRequest) -> tuple[tuple[int, int, float] | None, str]:
    try:
        after = int(request.GET.get("after", "0"))
        limit = int(request.GET.get("limit", str(MAX_CHANGES)))
        wait = float(request.GET.get("wait", "0"))
    except ValueError:
        return None, (
            "after and limit are whole numbers (the cursor the last answer gave, a page size), and wait "
            "a number of seconds to wait for a change."
        )
    if after < 0 or not 1 <= limit <= MAX_CHANGES:
        return None, f"after is 0 or more (0: from the start), and limit between 1 and {MAX_CHANGES}."
    if not 0 <= wait <= MAX_WAIT:  # also refuses nan and inf
        return None, f"wait is between 0 and {MAX_WAIT} seconds."
    return (after, limit, wait), ""


def _changes_body(after: int, limit: int, scope: list[int] | None) -> tuple[int, dict | None, str]:
    """(status, body, message): the feed after the cursor, or why it cannot be answered."""
    found = changes_after(after, regions=scope, limit=limit)
    if not found.names and after > (end := feed_end()):
        return (
            409,
            None,
            (
                f"The cursor {after} is beyond the end of the feed ({end}): this Certwright's "
                "database is not the one the cursor came from. Take a snapshot (GET /routers/v1/snapshot)."
            ),
        )
    # A first row read that is not the cursor's next (or none read) is a gap in the sequence,
    # another region's rows, or rows retention pruned: only the last loses changes.
    if found.first != after + 1 and after < (horizon := feed_horizon()):
        return (
            409,
            None,
            (
                f"The cursor {after} is older than what the feed keeps (pruned through {horizon}; "
                "FEED_RETENTION_DAYS): changes after it may be gone. "
                "Take a snapshot (GET /routers/v1/snapshot)."
            ),
        )
    try:
        body = {
            "cursor": found.cursor,
            "changes": [
                {
                    "seq": change.seq,
                    "name": change.name,
                    "candidates": [_candidate(c) for c in change.candidates],
                }
                for change in found.names
            ],
        }
    except SecretUnreadable as exc:
        logger.error("the routers' change feed after %s: %s", after, exc)
        return 503, None, f"A private key of the changed certificates cannot be read: {exc}."
    return 200, body, ""


_database_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _database_slot() -> asyncio.Semaphore:
    """The running event loop's limit on requests reading the database at once
    (FEED_DATABASE_CONNECTIONS): one loop in the feed service, one per request under WSGI."""
    loop = asyncio.get_running_loop()
    slot = _database_slots.get(loop)
    if slot is None:
        slot = _database_slots[loop] = asyncio.Semaphore(settings.FEED_DATABASE_CONNECTIONS)
    return slot


def _release_database() -> None:
    """Closes the request's database connection (unless a test's transaction holds it)."""
    if not connection.in_atomic_block:
        connection.close()


async def _in_database(function, *args):
    """`function(*args)` in the request's thread, holding one of the loop's database slots, the
    connection closed before the slot is given back: a feed process never holds more than
    FEED_DATABASE_CONNECTIONS connections, and a waiting router none."""
    async with _database_slot():
        try:
            return await sync_to_async(function)(*args)
        finally:
            await sync_to_async(_release_database)()


def _recheck(token: str) -> ApiToken | None:
    row = check_token(token)
    if row is None or not row.user.is_active or not _may_fetch_keys(row.user):
        return None
    return row


async def changes(request: HttpRequest) -> HttpResponse:
    """The routers' change feed: the names changed after the cursor `after` (at most `limit` feed
    rows, 1,000 by default and at most), each with every certificate it may serve from now on in
    serving order (a router serves, at each moment, the first whose window holds it; no
    candidates: drop the name), and the cursor to ask from next. With `wait` (seconds, at most 60)
    and nothing new, the answer waits until a change commits (woken by PostgreSQL's NOTIFY, see
    api/feed_wakeups.py) or the time runs out. Revoking the token cuts the wait with a 401."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    router, refused = await _in_database(_router, request)
    if refused is not None:
        return refused
    query, problem = _changes_query(request)
    if query is None:
        return _text(400, problem)
    after, limit, wait = query
    token = _token_from(request) or ""
    waiter = LISTENER.subscribe(router.pk) if wait > 0 else None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            status, body, message = await _in_database(_changes_body, after, limit, scope_of(router))
            if status != 200:
                return _text(status, message)
            remaining = deadline - loop.time()
            if body["changes"] or waiter is None or remaining <= 0:
                break
            reasons = await waiter.wait(remaining)
            if TOKEN in reasons:
                router = await _in_database(_recheck, token)
                if router is None:
                    return _text(401, "Invalid or revoked token.", CHALLENGE)
    finally:
        if waiter is not None:
            LISTENER.unsubscribe(waiter)
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response


def _snapshot_lines(scope: list[int] | None) -> Iterator[bytes]:
    """The snapshot as JSON lines: the cursor, a line per name, and the end line (a stream without
    it was cut short). A key that cannot be read ends the stream with an error line instead."""
    names = 0
    stream = snapshot(regions=scope)
    try:
        yield json.dumps({"cursor": next(stream)}).encode() + b"\n"
        batch: list[bytes] = []
        for name, certificates in stream:
            batch.append(
                json.dumps({"name": name, "candidates": [_candidate(c) for c in certificates]}).encode()
            )
            names += 1
            if len(batch) >= 100:
                yield b"\n".join(batch) + b"\n"
                batch = []
        if batch:
            yield b"\n".join(batch) + b"\n"
        yield json.dumps({"end": True, "names": names}).encode() + b"\n"
    except SecretUnreadable as exc:
        logger.error("the routers' snapshot, after %s names: %s", names, exc)
        yield json.dumps({"error": f"A private key cannot be read: {exc}."}).encode() + b"\n"
    finally:
        stream.close()


async def _in_a_thread(lines: Callable[[], Iterator[bytes]]) -> AsyncIterator[bytes]:
    """Runs a synchronous stream (and its database work) in a thread of its own, handing its chunks
    over through a short queue: an ASGI server streams it without loading it all, and a client that
    goes away stops the thread at its next chunk."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=4)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for chunk in lines():
                if stop.is_set():
                    break
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
        except Exception as exc:
            logger.exception("the routers' snapshot failed")
            error = json.dumps({"error": f"The snapshot failed: {type(exc).__name__}."}).encode() + b"\n"
            if not stop.is_set():
                asyncio.run_coroutine_threadsafe(queue.put(error), loop).result()
        finally:
            connections.close_all()  # this thread's own: it ends here
            if not stop.is_set():
                asyncio.run_coroutine_threadsafe(queue.put(done), loop).result()

    thread = threading.Thread(target=produce, name="routers-snapshot", daemon=True)
    thread.start()
    try:
        while True:
            chunk = await queue.get()
            if chunk is done:
                break
            yield chunk
    finally:
        stop.set()
        while not queue.empty():  # unblock a producer waiting on a full queue
            queue.get_nowait()


def snapshot_view(request: HttpRequest) -> HttpResponse:
    """Everything served now or later for the token's regions, streamed as JSON lines (see
    _snapshot_lines), with the feed's cursor it is consistent with: where a router starts."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    router, refused = _router(request)
    if refused is not None:
        return refused
    scope = scope_of(router)
    if isinstance(request, ASGIRequest):
        content = _in_a_thread(lambda: _snapshot_lines(scope))
    else:
        content = _snapshot_lines(scope)
    response = StreamingHttpResponse(content, content_type="application/x-ndjson")
    response["Cache-Control"] = "no-store"
    return response


ROUTERS_USERNAME = "routers"


def create_router_token(name: str, regions: list[int] | None = None) -> str:
    """A new token for a router (shown once): it belongs to the `routers` user, created on first
    use with no password (it cannot sign in) and the permission to fetch keys; with `regions`
    (ids), it fetches only those regions' certificates."""
    user, created = get_user_model().objects.get_or_create(
        username=ROUTERS_USERNAME, defaults={"is_active": True, "is_staff": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    app_label, codename = PERMISSION.split(".")
    user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    row, token = create_token(user, name)
    if regions:
        ApiToken.objects.filter(pk=row.pk).update(regions=sorted(set(regions)))
    return token
