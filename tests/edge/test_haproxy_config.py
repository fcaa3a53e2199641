"""The HAProxy configuration Certwright ships: HAProxy accepts it, port 80 sends ACME's HTTP-01 requests to
Certwright's web processes and redirects the rest to HTTPS, and the copy in edge/ is what render_config
makes."""

from __future__ import annotations

import http.client
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack.ports import free_port
from edge.haproxy_config import ConfigError, main, render_config
from tests.edge.haproxy_process import HAPROXY, start_haproxy

SHIPPED = Path(__file__).resolve().parents[2] / "edge" / "haproxy.cfg"


class _Web(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"web saw {self.headers['Host']} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Web)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def get(port: int, path: str, host: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    answer = response.status, response.getheader("Location") or "", response.read()
    connection.close()
    return answer


def test_port_80_sends_acme_challenges_to_the_web_and_redirects_the_rest_to_https(tmp_path, web):
    http_port = free_port()
    process, *_ = start_haproxy(tmp_path / "haproxy", free_port(), http_port, web)
    try:
        status, _, body = get(http_port, "/.well-known/acme-challenge/token123", "www.example.com")
        assert (status, body) == (200, b"web saw www.example.com /.well-known/acme-challenge/token123")

        status, location, _ = get(http_port, "/shop?item=1", "www.example.com")
        assert (status, location) == (301, "https://www.example.com/shop?item=1")
        status, location, _ = get(http_port, "/.well-known/other", "www.example.com")
        assert (status, location) == (301, "https://www.example.com/.well-known/other")
    finally:
        process.stop()


def test_haproxy_accepts_the_rendered_config_with_an_empty_crt_list(tmp_path):
    crt_list = tmp_path / "crt-list"
    crt_list.touch()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        render_config(
            socket_path=str(tmp_path / "admin.sock"),
            crt_list=str(crt_list),
            web_servers=["127.0.0.1:8000", "127.0.0.1:8001"],
            app_servers=["127.0.0.1:9000"],
        )
    )
    result = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def test_the_config_in_edge_is_what_the_module_prints_by_default(capsys):
    assert main([]) == 0
    assert SHIPPED.read_text() == capsys.readouterr().out
    assert (
        "stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd listeners" in SHIPPED.read_text()
    )


def test_a_value_that_would_change_the_config_is_refused_in_words():
    with pytest.raises(ConfigError, match=r"the crt-list path '/etc/x y' cannot go into haproxy\.cfg"):
        render_config(socket_path="/s", crt_list="/etc/x y", web_servers=["127.0.0.1:8000"])
    with pytest.raises(ConfigError, match="at least one Certwright web server"):
        render_config(socket_path="/s", crt_list="/l", web_servers=[])


def test_the_module_refuses_a_bad_value_in_words_without_a_traceback(capsys):
    assert main(["--crt-list", "/etc/a b"]) == 2
    assert capsys.readouterr().err == (
        "haproxy config: the crt-list path '/etc/a b' cannot go into haproxy.cfg "
        "(no spaces, quotes, # or \\)\n"
    )
