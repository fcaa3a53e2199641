"""The HTTP side: one `requests.Session` with the token, the API's cursor pagination followed to the
end, and every failure mapped to an exception that carries the CLI's exit code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from cli.errors import WHERE_TOKENS_COME_FROM, AuthError, ServerError, UserError

API_PREFIX = "/api/v1/"
# Connecting is quick or hopeless; an upload's checks or a page of 500 domains may take a while.
TIMEOUT = (10, 60)
USER_AGENT = "certwright-cli/1"
# A server that keeps answering `next` (a bug, or not Certwright) must not keep the CLI forever.
MAX_PAGES = 10_000


def segment(value: str) -> str:
    """`value` as one path segment: a domain may be Unicode or start with `*.`, never a slash."""
    return quote(value, safe="")


class ApiClient:
    """Certwright's REST API at `base_url` (such as http://localhost:8000), authenticated by `token`."""

    def __init__(self, base_url: str, token: str, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )

    def url(self, path: str) -> str:
        return self.base_url + API_PREFIX + path.lstrip("/")

    def request(self, method: str, path: str, *, json: dict | None = None, params: dict | None = None) -> Any:
        """The decoded JSON answer of `method path` (None for an empty one); raises a CliError otherwise."""
        return self._send(method, self.url(path), json=json, params=params)

    def get(self, path: str, params: dict | None = None) -> Any:
        return self.request("GET", path, params=params)

    def paginate(self, path: str, params: dict | None = None) -> Iterator[dict]:
        """Every result of a cursor-paginated list, following `next` to the last page."""
        url: str | None = self.url(path)
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise ServerError(f"the API's pages do not end (at {url})")
            seen.add(url)
            page = self._send("GET", url, params=params if len(seen) == 1 else None)
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise ServerError(f"{url} did not answer a page of results: is it a Certwright API?")
            yield from page["results"]
            url = self._same_origin(page["next"]) if page.get("next") else None

    def _same_origin(self, url: str) -> str:
        # `next` is built from the Host the server saw; behind a proxy it may name another origin, and
        # the token must only go where the user sent it.
        base, found = urlsplit(self.base_url), urlsplit(url)
        return urlunsplit((base.scheme, base.netloc, found.path, found.query, ""))

    def _send(self, method: str, url: str, *, json: dict | None = None, params: dict | None = None) -> Any:
        try:
            response = self.session.request(method, url, json=json, params=params, timeout=TIMEOUT)
        except requests.Timeout:
            raise ServerError(f"the Certwright API at {self.base_url} did not answer in time") from None
        except requests.ConnectionError:
            raise ServerError(
                f"cannot reach the Certwright API at {self.base_url} (is the server running? "
                "set CERTWRIGHT_API_URL or --api-url)"
            ) from None
        except requests.RequestException as exc:
            raise ServerError(f"request to {url} failed: {exc}") from None
        if response.status_code >= 400:
            raise error_for(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"{url} answered HTTP {response.status_code} but not JSON: "
                f"is {self.base_url} a Certwright API?"
            ) from None


def error_lines(body: Any) -> list[str]:
    """One line per problem of an error body: `{"detail": ...}`, or `{"field": ["message", ...]}` as
    `field: message` lines (nested fields as `field.sub`)."""
    if isinstance(body, str):
        return [body]
    if isinstance(body, list):
        return [line for item in body for line in error_lines(item)]
    if not isinstance(body, dict):
        return [str(body)]
    lines = []
    for field, value in body.items():
        for message in error_lines(value):
            if field in ("detail", "non_field_errors"):
                lines.append(message)
            elif isinstance(value, dict):
                lines.append(f"{field}.{message}")
            else:
                lines.append(f"{field}: {message}")
    return lines


def error_for(response: requests.Response) -> UserError | AuthError | ServerError:
    """The exception for an HTTP error answer, with the API's own messages when it gave JSON."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    lines = error_lines(body) if body not in (None, {}, []) else []
    if status in (401, 403):
        hint = "check the token (CERTWRIGHT_API_TOKEN or --token)"
        if status == 401:
            # No token the API knows (mistyped, revoked, its user deactivated): only a new one helps.
            hint += f"; {WHERE_TOKENS_COME_FROM}"
        return AuthError(*(f"{line}: {hint}" for line in lines or ["authentication failed"]))
    if status >= 500:
        return ServerError(
            *(f"server error (HTTP {status}): {line}" for line in lines or [response.reason or "no details"])
        )
    if not lines:
        # Not the API's JSON: a proxy's page, or a URL that is not a Certwright API at all.
        return UserError(f"HTTP {status} {response.reason or ''} from {response.url}".rstrip())
    if status == 429 and response.headers.get("Retry-After", "").isdigit():
        lines[-1] += f" (retry in {response.headers['Retry-After']} s)"
    return UserError(*lines)
