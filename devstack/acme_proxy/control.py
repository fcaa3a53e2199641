"""The proxy's JSON control API under /_proxy/ and its client, for a proxy in another process."""

from __future__ import annotations

import datetime
import json
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from devstack.acme_proxy.documents import (
    CONTROL_PATH,
    DIRECTORY_PATH,
    MAX_CERT_ID_CHARS,
    Request,
    Response,
    _json,
    parse_rfc3339,
    rfc3339,
    well_formed_cert_id,
)

if TYPE_CHECKING:
    from devstack.acme_proxy.proxy import AcmeProxy


class _Control:
    """The JSON control API under /_proxy/, for a proxy in another process (the benchmark):

    GET  /_proxy/state                  settings and counters (see `state`)
    GET  /_proxy/orders                 every order, as `AcmeProxy.orders`
    GET  /_proxy/certificates           every certificate seen (certID, account, dates, serial, replaced_by)
    GET  /_proxy/renewal-info-count/ID  renewalInfo requests for one certID
    GET  /_proxy/new-order-count/NAME   newOrders naming NAME
    POST /_proxy/window                 {"cert_id", "start", "end", "explanation_url"?}
    POST /_proxy/move-all-windows       {"start", "end", "explanation_url"?}
    POST /_proxy/reset-windows          {}
    POST /_proxy/answer-unknown         {"start", "end"} or {} to answer 404 again
    POST /_proxy/settings               {"ari_enabled"?, "retry_after"?, "profiles"? {name: seconds}}
    POST /_proxy/fail-renewal-info      {"status"?, "times"?, "retry_after"?}
    POST /_proxy/pause                  {"identifier", "unpause_url", "account"?}
    POST /_proxy/unpause                {"identifier", "account"?}
    POST /_proxy/outage                 {"mode": "error"|"hang"|"mixed", "seconds"} or {"mode": "none"}
    POST /_proxy/refuse-new-orders      {"detail", "retry_after", "times"?, "exempt_renewals"?}
    Bad input is a 400 {"error": "..."} naming what is wrong.
    """

    def __init__(self, proxy: AcmeProxy) -> None:
        self.proxy = proxy

    def handle(self, request: Request) -> Response:
        name = request.path[len(CONTROL_PATH) :]
        try:
            if request.method == "GET":
                return self._get(name)
            if request.method != "POST":
                return _json(405, {"error": "the control API takes GET and POST"})
            try:
                document = json.loads(request.body or b"{}")
            except ValueError:
                return _json(400, {"error": "the body is not JSON"})
            if not isinstance(document, dict):
                return _json(400, {"error": "the body is not a JSON object"})
            handler = getattr(self, "_post_" + name.replace("-", "_"), None)
            if handler is None or "/" in name:
                return _json(404, {"error": f"no control {name!r}"})
            handler(document)
            return _json(200, self.state())
        except _BadInput as exc:
            return _json(400, {"error": str(exc)})

    def state(self) -> dict[str, Any]:
        proxy = self.proxy
        with proxy._lock:
            return {
                "directory_url": proxy.directory_url,
                "ari_enabled": proxy.ari_enabled,
                "retry_after": proxy.retry_after,
                "profiles": {name: life.total_seconds() for name, life in proxy.profiles.items()},
                "renewal_info_served": proxy.renewal_info_served,
                "connections_accepted": proxy.connections_accepted,
                "new_orders_passed": proxy.new_orders_passed,
                "new_orders_refused": proxy.new_orders_refused,
                "orders": len(proxy.orders),
                "certificates": len(proxy.certificates),
                "outage": {
                    "mode": proxy.outage.mode,
                    "remaining": proxy.outage.remaining(),
                    "requests_failed": proxy.outage.requests_failed,
                },
            }

    def _get(self, name: str) -> Response:
        proxy = self.proxy
        if name == "state":
            return _json(200, self.state())
        if name == "orders":
            with proxy._lock:
                return _json(200, list(proxy.orders))
        if name == "certificates":
            with proxy._lock:
                seen = [
                    {
                        "cert_id": c.cert_id,
                        "account": c.account,
                        "not_before": rfc3339(c.not_before),
                        "not_after": rfc3339(c.not_after),
                        "serial": c.serial,
                        "names": c.names,
                        "replaced_by": c.replaced_by,
                        "revoked": c.revoked,
                    }
                    for c in proxy.certificates.values()
                ]
            return _json(200, seen)
        head, _, rest = name.partition("/")
        if head == "renewal-info-count" and rest:
            return _json(200, {"cert_id": rest, "count": proxy.renewal_info_served_for(rest)})
        if head == "new-order-count" and rest:
            return _json(200, {"identifier": rest, "count": proxy.new_orders_for(rest)})
        return _json(404, {"error": f"no control {name!r}"})

    def _post_window(self, document: dict) -> None:
        cert_id = _text(document, "cert_id")
        if not well_formed_cert_id(cert_id):
            raise _BadInput(
                f"cert_id {cert_id[:MAX_CERT_ID_CHARS]!r} is not an RFC 9773 certificate identifier"
            )
        start, end = _window(document)
        self.proxy.set_window(cert_id, start, end, _optional_text(document, "explanation_url"))

    def _post_move_all_windows(self, document: dict) -> None:
        start, end = _window(document)
        self.proxy.move_all_windows(start, end, _optional_text(document, "explanation_url"))

    def _post_reset_windows(self, document: dict) -> None:
        self.proxy.reset_windows()

    def _post_answer_unknown(self, document: dict) -> None:
        if document.get("start") is None and document.get("end") is None:
            self.proxy.answer_unknown(None)
        else:
            self.proxy.answer_unknown(*_window(document))

    def _post_settings(self, document: dict) -> None:
        unknown = set(document) - {"ari_enabled", "retry_after", "profiles"}
        if unknown:
            raise _BadInput(f"unknown settings: {', '.join(sorted(unknown))}")
        updates: dict[str, Any] = {}
        if "ari_enabled" in document:
            if not isinstance(document["ari_enabled"], bool):
                raise _BadInput("ari_enabled is true or false")
            updates["ari_enabled"] = document["ari_enabled"]
        if "retry_after" in document:
            updates["retry_after"] = _whole(document, "retry_after", 0, 10**9)
        if "profiles" in document:
            profiles = document["profiles"]
            if not isinstance(profiles, dict) or not all(
                isinstance(name, str) and name and isinstance(seconds, int | float) and 0 < seconds < 10**10
                for name, seconds in profiles.items()
            ):
                raise _BadInput("profiles is an object of profile name -> lifetime in seconds (positive)")
            updates["profiles"] = {name: datetime.timedelta(seconds=s) for name, s in profiles.items()}
        with self.proxy._lock:
            for attribute, value in updates.items():
                setattr(self.proxy, attribute, value)

    def _post_fail_renewal_info(self, document: dict) -> None:
        status = _whole(document, "status", 400, 599, default=500)
        times = _whole(document, "times", 1, 10**9, default=1)
        retry_after = (
            None if document.get("retry_after") is None else _whole(document, "retry_after", 0, 10**9)
        )
        self.proxy.fail_renewal_info(status, times, retry_after)

    def _post_pause(self, document: dict) -> None:
        self.proxy.pause(
            _text(document, "identifier"), _text(document, "unpause_url"), _optional_text(document, "account")
        )

    def _post_unpause(self, document: dict) -> None:
        self.proxy.unpause(_text(document, "identifier"), _optional_text(document, "account"))

    def _post_refuse_new_orders(self, document: dict) -> None:
        retry_after = str(_whole(document, "retry_after", 0, 10**9))
        times = _whole(document, "times", 1, 10**9, default=1)
        exempt = document.get("exempt_renewals", True)
        if not isinstance(exempt, bool):
            raise _BadInput("exempt_renewals is true or false")
        self.proxy.refuse_new_orders(_text(document, "detail"), retry_after, times, exempt)

    def _post_outage(self, document: dict) -> None:
        mode = document.get("mode")
        if mode == "none":
            self.proxy.outage.end()
            return
        try:
            self.proxy.outage.start(mode, _whole(document, "seconds", 1, 86400))
        except ValueError as exc:
            raise _BadInput(str(exc)) from None


class _BadInput(ValueError):
    pass


def _text(document: dict, key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value or len(value) > 2000:
        raise _BadInput(f"{key} is a non-empty string (at most 2000 characters)")
    return value


def _optional_text(document: dict, key: str) -> str | None:
    return None if document.get(key) is None else _text(document, key)


def _whole(document: dict, key: str, low: int, high: int, default: int | None = None) -> int:
    value = document.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _BadInput(f"{key} is a whole number from {low} to {high}")
    return value


def _window(document: dict) -> tuple[datetime.datetime, datetime.datetime]:
    try:
        start, end = parse_rfc3339(_text(document, "start")), parse_rfc3339(_text(document, "end"))
    except ValueError as exc:
        raise _BadInput(f"start and end are RFC 3339 timestamps with an offset: {exc}") from None
    if end < start:
        raise _BadInput("end is before start")
    return start, end


class ProxyControl:
    """A client of a proxy's control API (a proxy in another process)."""

    def __init__(self, directory_url: str, ca_file: str | Path) -> None:
        base = (
            directory_url[: -len(DIRECTORY_PATH)] if directory_url.endswith(DIRECTORY_PATH) else directory_url
        )
        self.client = httpx.Client(
            base_url=base + CONTROL_PATH.rstrip("/"),
            verify=ssl.create_default_context(cafile=str(ca_file)),
            timeout=30,
        )

    def get(self, name: str) -> Any:
        response = self.client.get(f"/{name}")
        response.raise_for_status()
        return response.json()

    def post(self, name: str, **document: Any) -> dict[str, Any]:
        """POSTs `document` (datetimes as RFC 3339) to /_proxy/<name>; raises on a 4xx with its error."""
        encoded = {k: rfc3339(v) if isinstance(v, datetime.datetime) else v for k, v in document.items()}
        response = self.client.post(f"/{name}", json=encoded)
        if response.status_code >= 400:
            raise ValueError(f"{name}: {response.status_code} {response.text}")
        return response.json()

    def close(self) -> None:
        self.client.close()


def proxy_command(upstream: str, tls: Path, port: int) -> list[str]:
    """`python -m devstack.acme_proxy` in front of the Pebble at `upstream` (host:port), serving
    HTTPS on `port` with the listener certificate in `tls` (ca.pem, cert.pem, key.pem)."""
    return [
        sys.executable,
        "-m",
        "devstack.acme_proxy",
        "--upstream",
        upstream,
        "--ca-file",
        str(tls / "ca.pem"),
        "--cert",
        str(tls / "cert.pem"),
        "--key",
        str(tls / "key.pem"),
        "--port",
        str(port),
    ]
