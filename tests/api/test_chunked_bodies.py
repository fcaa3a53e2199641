"""Request bodies through the real web server (gunicorn), over raw sockets: Django's test client
always declares a Content-Length, so neither chunked bodies nor a body refused before it is sent can
be seen through it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading

import pytest

from api.tokens import create_token
from domains.models import Domain
from tests.factories import AppFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PATH = "/api/v1/apps/chunky/domains"


@pytest.fixture
def server(web_server) -> tuple[str, int]:
    return "127.0.0.1", int(os.environ["CERTWRIGHT_TEST_HTTP01_PORT"])


@pytest.fixture
def token(db) -> str:
    app = AppFactory(name="chunky")
    return create_token(app.owner, "chunks")[1]


def head(token: str, *lines: str) -> bytes:
    fields = [
        f"POST {PATH} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        *lines,
    ]
    return ("\r\n".join(fields) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the response."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def test_a_chunked_body_is_read_like_a_declared_one(server, token):
    body = json.dumps({"name": "www.chunked-example.com", "letsencrypt": False}).encode()

    with socket.create_connection(server, timeout=20) as sock:
        sock.sendall(head(token, "Transfer-Encoding: chunked"))
        for start in range(0, len(body), 7):
            sock.sendall(chunk(body[start : start + 7]))
        sock.sendall(b"0\r\n\r\n")
        status, answered = answer(sock)

    assert status == 201, answered
    assert answered["name"] == "www.chunked-example.com"
    assert Domain.objects.filter(name="www.chunked-example.com", letsencrypt_enabled=False).exists()


def test_a_chunked_body_past_the_limit_is_413_without_waiting_for_its_end(server, token, settings):
    def send_forever(sock: socket.socket) -> None:
        # Four times the limit, and never the last chunk: the answer cannot wait for the end.
        try:
            sock.sendall(chunk(b'{"name": "www.example.com",'))
            for _ in range(4 * settings.API_MAX_BODY_BYTES // 16384):
                sock.sendall(chunk(b" " * 16384))
        except OSError:  # the server answered and closed the connection: it read no further
            pass

    with socket.create_connection(server, timeout=20) as sock:
        sock.sendall(head(token, "Transfer-Encoding: chunked"))
        sender = threading.Thread(target=send_forever, args=(sock,))
        sender.start()
        status, answered = answer(sock)
        sender.join()

    assert status == 413
    assert answered == {
        "detail": f"the request body is larger than {settings.API_MAX_BODY_BYTES:,} bytes "
        "(API_MAX_BODY_BYTES), the most the API accepts"
    }
    assert not Domain.objects.exists()


def test_a_declared_length_past_the_limit_is_413_before_the_body_is_sent(server, token):
    with socket.create_connection(server, timeout=20) as sock:
        sock.sendall(head(token, "Content-Length: 5000000"))
        status, answered = answer(sock)

    assert status == 413
    assert "(API_MAX_BODY_BYTES)" in answered["detail"]


def test_a_sign_in_page_declaring_a_body_past_the_page_cap_is_413_before_it_is_sent(server):
    # No session and no CSRF token: the cap answers before CsrfViewMiddleware would read the form
    # (and Django would stream its files to disk).
    fields = [
        "POST /apps/login/ HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: multipart/form-data; boundary=x",
        f"Content-Length: {50 * 1024 * 1024}",
    ]
    with socket.create_connection(server, timeout=20) as sock:
        sock.sendall(("\r\n".join(fields) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        page = response.read().decode()

    assert response.status == 413
    assert "(PAGE_MAX_BODY_BYTES)" in page
