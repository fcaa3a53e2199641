"""The HTTP client of Certwright's routers' feed: the snapshot (streamed NDJSON) and the changes
(long-poll). Errors are sorted into what the agent does about them: unreachable (retry with backoff),
refused (the token: retry slowly), cursor ahead (take a snapshot again), a wrong answer (retry).

The token goes in the Authorization header only; no message built here contains it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

USER_AGENT = "certwright-edge/0.1"


class FeedError(Exception):
    """The feed answered something the agent cannot use; the message says what (never the token)."""


class FeedUnavailable(FeedError):
    """Certwright cannot be reached or answered 5xx: keep serving the store and retry with backoff."""


class IncompleteSnapshot(FeedUnavailable):
    """The snapshot stream ended before its end line (or its count did not match): discard it."""


class FeedUnauthorized(FeedError):
    """401/403: the token is unknown, revoked or not a router token."""


class CursorAhead(FeedError):
    """409: the feed cannot go on from the cursor: it is beyond the feed's end (Certwright's
    database was restored) or older than what the feed keeps (pruned). Snapshot again."""


@dataclass(frozen=True)
class ChangesPage:
    cursor: int
    changes: list[dict[str, Any]]


@dataclass(frozen=True)
class SnapshotName:
    name: Any
    candidates: Any


class Feed:
    """Certwright's feed at `base_url` (e.g. http://127.0.0.1:8001), with a router token."""

    def __init__(
        self, base_url: str, token: str, *, connect_timeout: float = 10.0, verify: bool | str = True
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.session = requests.Session()
        # HTTPS: certifi's CAs, or the file given (--ca-file); never unverified.
        self.session.verify = verify
        self.session.headers.update({"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT})
        # Proxies from the environment would send the token elsewhere; the feed is reached directly.
        self.session.trust_env = False

    def close(self) -> None:
        self.session.close()

    def _get(self, path: str, *, params: dict | None = None, read_timeout: float, stream: bool = False):
        url = f"{self.base_url}/routers/v1/{path}"
        try:
            response = self.session.get(
                url, params=params, timeout=(self.connect_timeout, read_timeout), stream=stream
            )
        except requests.Timeout:
            raise FeedUnavailable(f"{self.base_url} did not answer in time") from None
        except requests.RequestException as error:
            raise FeedUnavailable(f"cannot reach {self.base_url}: {type(error).__name__}") from None
        if response.status_code == 200:
            return response
        detail = _detail(response)
        response.close()
        if response.status_code in (401, 403):
            raise FeedUnauthorized(f"{self.base_url} refused the token (HTTP {response.status_code}{detail})")
        if response.status_code == 409:
            raise CursorAhead(f"the feed cannot go on from the cursor (HTTP 409{detail})")
        if response.status_code >= 500:
            raise FeedUnavailable(f"{self.base_url} answered HTTP {response.status_code}")
        raise FeedError(f"{url} answered HTTP {response.status_code}{detail}")

    def changes(self, after: int, *, wait: int = 55, limit: int = 1000) -> ChangesPage:
        """The changes after `after`; with `wait`, held by the server until one commits or `wait` s pass."""
        response = self._get(
            "changes", params={"after": after, "limit": limit, "wait": wait}, read_timeout=wait + 10
        )
        try:
            body = response.json()
        except ValueError:
            raise FeedError("the changes answer is not JSON") from None
        except requests.RequestException as error:
            raise FeedUnavailable(f"the changes answer was cut: {type(error).__name__}") from None
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("cursor"), int)
            or not isinstance(body.get("changes"), list)
        ):
            raise FeedError("the changes answer lacks a cursor or a list of changes")
        return ChangesPage(body["cursor"], body["changes"])

    def snapshot(self, *, read_timeout: float = 120.0) -> Iterator[int | SnapshotName]:
        """The snapshot, line by line as it streams: first the cursor (int), then a SnapshotName per
        name. Raises IncompleteSnapshot when the stream ends without its end line (or a miscount);
        a caller that got to the end of the iteration has the whole snapshot."""
        response = self._get("snapshot", read_timeout=read_timeout, stream=True)
        names = 0
        cursor_seen = False
        try:
            for line in response.iter_lines(chunk_size=256 * 1024):
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    raise FeedError(f"snapshot line {names + 2} is not JSON") from None
                if not isinstance(item, dict):
                    raise FeedError(f"snapshot line {names + 2} is not a JSON object")
                if not cursor_seen:
                    if not isinstance(item.get("cursor"), int):
                        raise FeedError("the snapshot's first line holds no cursor")
                    cursor_seen = True
                    yield item["cursor"]
                elif item.get("end") is True:
                    if item.get("names") != names:
                        raise IncompleteSnapshot(
                            f"the snapshot's end line counts {item.get('names')!r} names, {names} arrived"
                        )
                    return
                else:
                    names += 1
                    yield SnapshotName(item.get("name"), item.get("candidates"))
        except requests.RequestException as error:
            raise IncompleteSnapshot(
                f"the snapshot stream was cut after {names} names: {type(error).__name__}"
            ) from None
        finally:
            response.close()
        raise IncompleteSnapshot(f"the snapshot stream ended after {names} names without its end line")


def _detail(response: requests.Response) -> str:
    """A short, printable excerpt of an error body (the server's message), or nothing."""
    try:
        text = response.text.strip()
    except Exception:  # a body that cannot be read adds nothing to the message
        return ""
    if not text:
        return ""
    try:
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("detail") or body.get("error"), str):
            text = body.get("detail") or body.get("error")
    except ValueError:
        pass
    text = "".join(ch if ch.isprintable() else " " for ch in text)[:200]
    return f": {text}"
