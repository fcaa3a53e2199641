"""The `certwright` CLI without the real API: file formats turned into the PEM the API takes, errors
turned into exit codes and one stderr line each, configuration from flags, environment and .env, and
what each command sends and prints. The API is a small HTTP server in a thread."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import cli.client
import cli.main
from cli.errors import UserError
from cli.files import Passphrase, build_upload, load_key
from cli.main import main, read_dotenv
from tests.pki import Pki, der, key_der, key_pem, p7b, pem, pfx

ROOT = Path(__file__).resolve().parents[2]
NAME = "www.example.com"
PASSPHRASE = "correct horse battery staple"
TOKEN = "cwt_test-token-for-the-fake-api"


# The fake API.


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    url: str = ""
    routes: dict[tuple[str, str], tuple[int, Any, dict[str, str]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0

    def route(
        self, method: str, path: str, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        """Answers `method path` (the path with its query string, if it has one) with `body`: JSON
        unless it is bytes."""
        self.routes[(method, path)] = (status, body, headers or {})


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            api.seen.append(
                Seen(self.command, self.path, dict(self.headers), json.loads(raw) if raw else None)
            )
            time.sleep(api.delay)
            path_only = self.path.split("?", 1)[0]
            status, body, headers = api.routes.get(
                (self.command, self.path),
                api.routes.get((self.command, path_only), (404, {"detail": "Not found."}, {})),
            )
            payload = (
                body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
            )
            self.send_response(status)
            kind = "text/html" if isinstance(body, bytes) else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, format, *args):
            pass

    return Handler


@pytest.fixture
def api():
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_dotenv_no_proxy(monkeypatch, tmp_path):
    """The repository's real .env (maybe with a real token) stays out of these tests, and so does a
    developer's proxy."""
    monkeypatch.setattr(cli.main, "DOTENV", tmp_path / "absent.env")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def run(api: FakeApi | None, *argv: str, environ: dict[str, str] | None = None) -> int:
    env = {"CERTWRIGHT_API_URL": api.url, "CERTWRIGHT_API_TOKEN": TOKEN} if api else {}
    return main(["--app", "demo", *argv], environ={**env, **(environ or {})})


def domain(name: str = NAME, **changes: Any) -> dict:
    data = {
        "name": name,
        "unicode_name": name,
        "app": "demo",
        "status": "in_use",
        "status_label": "In use",
        "letsencrypt": True,
        "custom_certificate": False,
        "certificate": {
            "source": "letsencrypt",
            "sans": [name],
            "issuer": "CN=Pebble Intermediate CA",
            "not_before": "2025-01-01T00:00:00Z",
            "not_after": "2025-04-01T00:00:00Z",
            "fingerprint_sha256": "ab" * 32,
        },
        "dns": {"ok": True, "message": "the domain points at the platform", "records": [f"{name}. CNAME x."]},
        "next_attempt_at": None,
        "last_error": "",
        "quota": {
            "registered_domain": "example.com",
            "limit": 50,
            "period_seconds": 604800,
            "tokens_left": 49,
            "next_token_at": None,
        },
        "created": "2025-01-01T00:00:00Z",
    }
    data.update(changes)
    return data


def stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


# File formats.


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def issued(pki):
    return pki.leaf([NAME])


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def bundle_of(upload) -> list[x509.Certificate]:
    assert upload.tlscert.startswith("-----BEGIN CERTIFICATE-----")
    return x509.load_pem_x509_certificates(upload.tlscert.encode())


def key_of(upload):
    return serialization.load_pem_private_key(upload.tlskey.encode(), None)


def same_key(a, b) -> bool:
    form = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_key().public_bytes(*form) == b.public_key().public_bytes(*form)


NO_PASSPHRASE = Passphrase(interactive=False)


def test_a_pem_bundle_and_a_pem_key_are_sent_as_they_are(tmp_path, pki, issued):
    leaf, key = issued
    cert = write(tmp_path, "cert.pem", b"subject=CN = www\n" + pem(leaf, pki.intermediate))
    key_file = write(tmp_path, "key.pem", key_pem(key))
    upload = build_upload(cert, NO_PASSPHRASE, key=key_file)
    assert bundle_of(upload) == [leaf, pki.intermediate]
    assert upload.tlskey.strip() == key_pem(key).decode().strip()
    assert upload.fields().keys() == {"tlscert", "tlskey"}


def test_a_der_certificate_a_der_chain_and_a_der_key_become_pem_leaf_first(tmp_path, pki, issued):
    leaf, key = issued
    upload = build_upload(
        write(tmp_path, "leaf.der", der(leaf)),
        NO_PASSPHRASE,
        key=write(tmp_path, "key.der", key_der(key)),
        chain=[write(tmp_path, "inter.der", der(pki.intermediate))],
    )
    assert bundle_of(upload) == [leaf, pki.intermediate]
    assert upload.tlskey.startswith("-----BEGIN PRIVATE KEY-----")
    assert same_key(key_of(upload), key)
    assert upload.tlskey_passphrase is None


@pytest.mark.parametrize("as_der", [True, False], ids=["der", "pem"])
def test_a_pkcs7_bundle_gives_every_certificate_it_holds(tmp_path, pki, issued, as_der):
    leaf, key = issued
    upload = build_upload(
        write(tmp_path, "site.p7b", p7b([leaf, pki.intermediate], der=as_der)),
        NO_PASSPHRASE,
        key=write(tmp_path, "key.pem", key_pem(key)),
    )
    assert set(bundle_of(upload)) == {leaf, pki.intermediate}


def test_a_pkcs12_file_needs_no_key_file_and_is_decrypted_with_the_passphrase_file(tmp_path, pki, issued):
    leaf, key = issued
    cert = write(tmp_path, "site.pfx", pfx(key, leaf, [pki.intermediate], passphrase=PASSPHRASE))
    passphrase_file = write(tmp_path, "pass.txt", f"{PASSPHRASE}\nsecond line is ignored\n".encode())
    upload = build_upload(cert, Passphrase(passphrase_file, interactive=False))
    assert bundle_of(upload) == [leaf, pki.intermediate]
    assert same_key(key_of(upload), key)
    # Decrypted here: the API receives an unencrypted key and no passphrase.
    assert upload.tlskey_passphrase is None


def test_an_unencrypted_pkcs12_file_opens_without_asking_for_a_passphrase(tmp_path, pki, issued):
    leaf, key = issued
    upload = build_upload(write(tmp_path, "site.p12", pfx(key, leaf)), NO_PASSPHRASE)
    assert bundle_of(upload) == [leaf]


def test_a_pkcs12_file_with_a_wrong_passphrase_is_a_user_error_naming_the_file(tmp_path, pki, issued):
    leaf, key = issued
    cert = write(tmp_path, "site.pfx", pfx(key, leaf, passphrase=PASSPHRASE))
    with pytest.raises(UserError, match=r"site\.pfx: cannot open this PKCS#12 file: wrong passphrase"):
        build_upload(cert, Passphrase(write(tmp_path, "pass.txt", b"nope\n")))


@pytest.mark.parametrize(("key_type", "fmt"), [("ec", "pkcs8"), ("ec", "sec1"), ("rsa2048", "pkcs1")])
def test_a_der_key_is_sent_as_unencrypted_pem(tmp_path, key_type, fmt, pki):
    _, key = pki.leaf([NAME], key_type=key_type)
    found = load_key(write(tmp_path, "key.der", key_der(key, fmt)), NO_PASSPHRASE)
    assert same_key(serialization.load_pem_private_key(found.pem.encode(), None), key)
    assert found.passphrase is None


def test_an_encrypted_der_key_is_decrypted_locally_with_the_passphrase(tmp_path, issued):
    _, key = issued
    path = write(tmp_path, "key.der", key_der(key, "pkcs8", passphrase=PASSPHRASE))
    found = load_key(path, Passphrase(write(tmp_path, "pass", PASSPHRASE.encode())))
    assert same_key(serialization.load_pem_private_key(found.pem.encode(), None), key)
    assert found.passphrase is None


def test_an_encrypted_der_key_with_a_wrong_passphrase_is_a_user_error_naming_the_file(tmp_path, issued):
    _, key = issued
    path = write(tmp_path, "key.der", key_der(key, "pkcs8", passphrase=PASSPHRASE))
    with pytest.raises(UserError, match=r"key\.der: wrong passphrase"):
        load_key(path, Passphrase(write(tmp_path, "pass", b"wrong")))


@pytest.mark.parametrize("fmt", ["pkcs8", "sec1"])
def test_an_encrypted_pem_key_is_sent_as_it_is_with_its_passphrase(tmp_path, issued, fmt):
    _, key = issued
    encrypted = key_pem(key, fmt, passphrase=PASSPHRASE)
    found = load_key(
        write(tmp_path, "key.pem", encrypted), Passphrase(write(tmp_path, "p", PASSPHRASE.encode()))
    )
    assert found.pem.strip() == encrypted.decode().strip()
    assert found.passphrase == PASSPHRASE


def test_an_encrypted_key_without_a_passphrase_file_or_a_terminal_is_a_user_error(tmp_path, issued):
    _, key = issued
    path = write(tmp_path, "key.pem", key_pem(key, passphrase=PASSPHRASE))
    with pytest.raises(UserError, match=r"key\.pem is encrypted: give its passphrase with --passphrase-file"):
        load_key(path, Passphrase(interactive=False))


def test_an_encrypted_key_asks_its_passphrase_on_a_terminal_once(tmp_path, issued):
    _, key = issued
    path = write(tmp_path, "key.der", key_der(key, "pkcs8", passphrase=PASSPHRASE))
    prompts = []
    ask = Passphrase(interactive=True, prompt=lambda text: prompts.append(text) or PASSPHRASE)
    assert same_key(serialization.load_pem_private_key(load_key(path, ask).pem.encode(), None), key)
    load_key(path, ask)
    assert prompts == [f"Passphrase for {path}: "]


def test_the_format_is_found_from_the_bytes_not_the_file_name(tmp_path, pki, issued):
    leaf, key = issued
    upload = build_upload(
        write(tmp_path, "leaf.pem", der(leaf)),
        NO_PASSPHRASE,
        key=write(tmp_path, "key.crt", pfx(key, leaf)),
        chain=[write(tmp_path, "chain.der", pem(pki.intermediate))],
    )
    assert bundle_of(upload) == [leaf, pki.intermediate]
    assert same_key(key_of(upload), key)


def test_a_certificate_in_both_the_bundle_and_the_chain_is_sent_once(tmp_path, pki, issued):
    leaf, key = issued
    upload = build_upload(
        write(tmp_path, "bundle.pem", pem(leaf, pki.intermediate)),
        NO_PASSPHRASE,
        key=write(tmp_path, "key.pem", key_pem(key)),
        chain=[write(tmp_path, "inter.der", der(pki.intermediate))],
    )
    assert bundle_of(upload) == [leaf, pki.intermediate]


def test_a_pem_file_with_the_certificate_and_its_key_needs_no_key_file(tmp_path, pki, issued):
    leaf, key = issued
    upload = build_upload(write(tmp_path, "all.pem", pki.chain_pem(leaf) + key_pem(key)), NO_PASSPHRASE)
    assert bundle_of(upload) == [leaf, pki.intermediate]
    assert same_key(key_of(upload), key)


def test_a_certificate_without_any_key_asks_for_the_key_file(tmp_path, issued):
    leaf, _ = issued
    with pytest.raises(UserError, match=r"leaf\.der holds no private key: give the key file with --key"):
        build_upload(write(tmp_path, "leaf.der", der(leaf)), NO_PASSPHRASE)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01 not a certificate at all \xff", "is not a certificate: expected PEM, DER"),
        (b"hello, world\n", "is not a certificate: expected PEM, DER"),
        (b"", "is empty"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
            "signing request",
        ),
        (b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "is damaged"),
    ],
    ids=["binary", "text", "empty", "csr", "damaged-pem"],
)
def test_a_file_that_is_not_a_certificate_is_a_user_error_naming_the_file(tmp_path, issued, content, message):
    _, key = issued
    path = write(tmp_path, "mystery.bin", content)
    with pytest.raises(UserError) as caught:
        build_upload(path, NO_PASSPHRASE, key=write(tmp_path, "key.pem", key_pem(key)))
    assert len(caught.value.lines) == 1
    assert str(caught.value).startswith(path) and message in str(caught.value)


def test_a_private_key_given_as_the_certificate_says_to_give_it_with_key(tmp_path, issued):
    _, key = issued
    with pytest.raises(UserError, match=r"key\.der is a private key, not a certificate: give it with --key"):
        build_upload(write(tmp_path, "key.der", key_der(key)), NO_PASSPHRASE)


def test_a_missing_file_is_a_user_error_exit_1_naming_it_before_any_request(tmp_path, api, capsys):
    missing = str(tmp_path / "nowhere.pem")
    assert run(api, "domains-ssl", "--cert", missing, "--key", missing, NAME) == 1
    assert stderr_lines(capsys) == [f"certwright: {missing}: No such file or directory"]
    assert api.seen == []


def test_a_non_certificate_file_on_the_command_line_exits_1_with_one_line_naming_it(tmp_path, api, capsys):
    path = write(tmp_path, "notes.txt", b"just some notes\n")
    assert run(api, "domains-ssl", "--cert", path, "--key", path, NAME) == 1
    assert stderr_lines(capsys) == [
        f"certwright: {path} is not a certificate: expected PEM, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx)"
    ]


# Errors and exit codes.


@pytest.mark.parametrize(
    ("status", "body", "code", "lines"),
    [
        (
            400,
            {"tlscert": ["the certificate has expired", "second problem"], "tlskey": ["does not match"]},
            1,
            ["tlscert: the certificate has expired", "tlscert: second problem", "tlskey: does not match"],
        ),
        (401, {"detail": "invalid or revoked API token"}, 3, None),
        (403, {"detail": "Authentication credentials were not provided."}, 3, None),
        (404, {"detail": "no domain www.example.com on demo"}, 1, ["no domain www.example.com on demo"]),
        (409, {"detail": "www.example.com is in use by another app"}, 1, None),
        (413, {"detail": "the request body is larger than 65,536 bytes"}, 1, None),
        (429, {"detail": "Request was throttled."}, 1, None),
        (500, {"detail": "boom"}, 4, ["server error (HTTP 500): boom"]),
        (502, b"<html>Bad Gateway</html>", 4, ["server error (HTTP 502): Bad Gateway"]),
    ],
)
def test_each_api_error_exits_with_its_code_and_one_stderr_line_per_problem(
    api, capsys, status, body, code, lines
):
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", status, body)
    assert run(api, "domains-show", NAME) == code
    err = stderr_lines(capsys)
    if lines is not None:
        assert err == [f"certwright: {line}" for line in lines]
    else:
        assert len(err) == 1 and body["detail"] in err[0]
    assert all("Traceback" not in line for line in err)


def test_a_refused_token_says_which_token_to_check_and_where_a_new_one_comes_from(api, capsys):
    api.route("GET", "/api/v1/apps/demo/domains", 401, {"detail": "invalid or revoked API token"})
    assert run(api, "domains") == 3
    assert stderr_lines(capsys) == [
        "certwright: invalid or revoked API token: check the token (CERTWRIGHT_API_TOKEN or --token); "
        "the platform's operator makes one with `manage.py customer create NAME` (a new customer) "
        "or `manage.py api_token create NAME` (an existing user)"
    ]


def test_a_forbidden_answer_says_to_check_the_token_without_asking_for_a_new_one(api, capsys):
    api.route("GET", "/api/v1/apps/demo/domains", 403, {"detail": "You do not have permission."})
    assert run(api, "domains") == 3
    assert stderr_lines(capsys) == [
        "certwright: You do not have permission.: check the token (CERTWRIGHT_API_TOKEN or --token)"
    ]


def test_a_throttled_write_says_when_to_retry(api, capsys):
    api.route(
        "POST", f"/api/v1/apps/demo/domains/{NAME}/retry", 429, {"detail": "throttled"}, {"Retry-After": "7"}
    )
    assert run(api, "domains-retry", NAME) == 1
    assert stderr_lines(capsys) == ["certwright: throttled (retry in 7 s)"]


def test_an_unreachable_server_exits_4(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(
        ["-a", "demo", "domains"],
        environ={"CERTWRIGHT_API_URL": f"http://127.0.0.1:{port}", "CERTWRIGHT_API_TOKEN": TOKEN},
    )
    assert code == 4
    assert stderr_lines(capsys) == [
        f"certwright: cannot reach the Certwright API at http://127.0.0.1:{port} (is the server running? "
        "set CERTWRIGHT_API_URL or --api-url)"
    ]


def test_a_server_that_does_not_answer_in_time_exits_4(api, capsys, monkeypatch):
    monkeypatch.setattr(cli.client, "TIMEOUT", (2, 0.2))
    api.delay = 1
    api.route("GET", "/api/v1/apps/demo/domains", 200, {"next": None, "results": []})
    assert run(api, "domains") == 4
    assert stderr_lines(capsys) == [f"certwright: the Certwright API at {api.url} did not answer in time"]


def test_an_answer_that_is_not_json_exits_4_without_a_traceback(api, capsys):
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, b"<html>a login page</html>")
    assert run(api, "--json", "domains-show", NAME) == 4
    [line] = stderr_lines(capsys)
    assert "but not JSON" in line


def test_an_answer_of_an_unexpected_shape_is_one_line_not_a_traceback(api, capsys):
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, ["not", "a", "domain"])
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}/events", 200, {"next": None, "results": []})
    assert run(api, "domains-show", NAME) == 4
    [line] = stderr_lines(capsys)
    assert line.startswith("certwright: unexpected error: AttributeError")


# Configuration.


def test_dotenv_gives_the_url_and_token_when_the_environment_has_none(api, tmp_path, monkeypatch, capsys):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# written by make run\nSECRET_KEY=x\n"
        f"CERTWRIGHT_API_URL={api.url}\nexport CERTWRIGHT_API_TOKEN='{TOKEN}'\n"
    )
    monkeypatch.setattr(cli.main, "DOTENV", dotenv)
    api.route("GET", "/api/v1/apps/demo/domains", 200, {"next": None, "results": []})
    assert main(["--app", "demo", "domains"], environ={}) == 0
    assert api.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert capsys.readouterr().out == "No domains on demo.\n"


def test_the_environment_wins_over_dotenv_and_flags_win_over_the_environment(api, tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("CERTWRIGHT_API_URL=http://127.0.0.1:1\nCERTWRIGHT_API_TOKEN=cwt_from_dotenv\n")
    monkeypatch.setattr(cli.main, "DOTENV", dotenv)
    api.route("GET", "/api/v1/apps/demo/domains", 200, {"next": None, "results": []})
    environ = {"CERTWRIGHT_API_URL": api.url, "CERTWRIGHT_API_TOKEN": "cwt_from_env"}
    assert main(["-a", "demo", "domains"], environ=environ) == 0
    assert main(["-a", "demo", "--token", "cwt_from_flag", "domains"], environ=environ) == 0
    tokens = [seen.headers["Authorization"] for seen in api.seen]
    assert tokens == ["Bearer cwt_from_env", "Bearer cwt_from_flag"]


def test_the_app_comes_from_certwright_app_and_the_flag_wins(api):
    api.route("GET", "/api/v1/apps/other/domains", 200, {"next": None, "results": []})
    api.route("GET", "/api/v1/apps/from-env/domains", 200, {"next": None, "results": []})
    environ = {"CERTWRIGHT_API_URL": api.url, "CERTWRIGHT_API_TOKEN": TOKEN, "CERTWRIGHT_APP": "from-env"}
    assert main(["domains"], environ=environ) == 0
    assert main(["domains", "-a", "other"], environ=environ) == 0
    assert [seen.path for seen in api.seen] == ["/api/v1/apps/from-env/domains", "/api/v1/apps/other/domains"]


def test_no_app_is_a_usage_error_exit_2(capsys):
    assert main(["domains"], environ={"CERTWRIGHT_API_TOKEN": TOKEN}) == 2
    assert stderr_lines(capsys)[-1] == "certwright: error: no app: give --app APP or set CERTWRIGHT_APP"


def test_no_token_anywhere_exits_3_and_says_where_tokens_come_from(capsys, tmp_path):
    assert main(["-a", "demo", "domains"], environ={}) == 3
    assert stderr_lines(capsys) == [
        "certwright: no API token: set CERTWRIGHT_API_TOKEN or give --token; the platform's operator "
        "makes one with `manage.py customer create NAME` (a new customer) or `manage.py api_token create "
        f"NAME` (an existing user); in this checkout, `make run` writes one to {tmp_path / 'absent.env'}"
    ]


def test_an_installed_cli_reads_no_dotenv_and_does_not_mention_make_run(capsys, monkeypatch):
    # Installed by pip, cli/ sits in site-packages, not in a checkout (no manage.py beside it).
    monkeypatch.setattr(cli.main, "DOTENV", None)
    assert main(["-a", "demo", "domains"], environ={}) == 3
    [line] = stderr_lines(capsys)
    assert line.endswith("`manage.py api_token create NAME` (an existing user)")


def test_read_dotenv_skips_comments_and_blank_lines_and_unquotes_values(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# comment\n\nA=1\n export B = \"two words\" \nC='x=y'\nnot a pair\nD=#not-a-comment\n")
    assert read_dotenv(path) == {"A": "1", "B": "two words", "C": "x=y", "D": "#not-a-comment"}
    assert read_dotenv(tmp_path / "absent") == {}


# Commands.


def test_domains_follows_next_to_the_last_page_and_json_is_every_domain(api, capsys):
    first = f"{api.url}/api/v1/apps/demo/domains?status=in_use"
    api.route(
        "GET",
        "/api/v1/apps/demo/domains?status=in_use",
        200,
        {"next": f"{first}&cursor=p2", "results": [domain("a.example.com")]},
    )
    api.route(
        "GET",
        "/api/v1/apps/demo/domains?status=in_use&cursor=p2",
        200,
        {"next": None, "results": [domain("b.example.com")]},
    )
    assert run(api, "--json", "domains", "--status", "in_use") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in shown] == ["a.example.com", "b.example.com"]
    assert all(seen.headers["Authorization"] == f"Bearer {TOKEN}" for seen in api.seen)


def test_a_next_link_to_another_host_is_followed_on_the_api_url_so_the_token_stays_there(api, capsys):
    api.route(
        "GET",
        "/api/v1/apps/demo/domains",
        200,
        {
            "next": "http://internal:8000/api/v1/apps/demo/domains?cursor=p2",
            "results": [domain("a.example.com")],
        },
    )
    api.route(
        "GET",
        "/api/v1/apps/demo/domains?cursor=p2",
        200,
        {"next": None, "results": [domain("b.example.com")]},
    )
    assert run(api, "--json", "domains") == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_domains_prints_a_table_with_status_letsencrypt_certificate_and_a_truncated_error(api, capsys):
    failing = domain(
        "b.example.com",
        status="failing",
        status_label="Failing",
        letsencrypt=False,
        certificate=None,
        last_error="the CA said: " + "x" * 200,
    )
    api.route(
        "GET", "/api/v1/apps/demo/domains", 200, {"next": None, "results": [domain("a.example.com"), failing]}
    )
    assert run(api, "domains") == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["DOMAIN", "STATUS", "LET'S", "ENCRYPT", "CERTIFICATE", "LAST", "ERROR"]
    assert first.split() == ["a.example.com", "In", "use", "on", "letsencrypt", "until", "2025-04-01", "-"]
    assert second.split()[:4] == ["b.example.com", "Failing", "off", "-"]
    assert second.endswith("…") and len(second.split("-  ", 1)[1].strip()) == 60


def test_domains_show_prints_every_field_the_records_to_add_the_last_events_and_new_fields(api, capsys):
    record = f'_certwright-challenge.{NAME}. TXT "cw-token"'
    shown = domain(ownership={"verified": False, "record": record, "help": "proves it is this app's"})
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, shown)
    events = [
        {"created": f"2025-01-0{n}T10:00:00Z", "from_status": "", "to_status": "creating", "reason": f"r{n}"}
        for n in range(1, 6)
    ]
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}/events", 200, {"next": "more", "results": events})
    assert run(api, "domains-show", NAME) == 0
    out = capsys.readouterr().out
    for expected in (
        "name                www.example.com",
        "status              In use (in_use)",
        "letsencrypt         on",
        "  valid             2025-01-01 00:00 UTC to 2025-04-01 00:00 UTC",
        "dns                 ok: the domain points at the platform",
        "quota               49 of 50 certificates left for example.com per 7 days",
        "ownership",
        "  verified          no",
        f"  record            {record}",
        f"DNS records to add:\n  www.example.com. CNAME x.\n  {record}  (ownership: proves it is this app's)",
        "Last 5 events (newest first):\n  2025-01-01 10:00 UTC  new → creating: r1",
    ):
        assert expected in out
    assert api.seen[1].path == f"/api/v1/apps/demo/domains/{NAME}/events?page_size=5"


def test_domains_show_prints_the_renewal_time_and_the_cas_renewal_window(api, capsys):
    certificate = {
        **domain()["certificate"],
        "renew_at": "2025-03-02T10:30:00Z",
        "ari": {
            "window_start": "2025-03-01T00:00:00Z",
            "window_end": "2025-03-03T00:00:00Z",
            "explanation_url": "https://ca.example/incident",
            "checked_at": "2025-02-01T06:00:00Z",
            "next_check": "2025-02-01T12:00:00Z",
            "error": "",
        },
    }
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, domain(certificate=certificate))
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}/events", 200, {"next": None, "results": []})
    assert run(api, "domains-show", NAME) == 0
    out = capsys.readouterr().out
    for expected in (
        "  renewal           2025-03-02 10:30 UTC",
        "  ari window        2025-03-01 00:00 UTC to 2025-03-03 00:00 UTC",
        "  ari explanation   https://ca.example/incident",
        "  ari checked       2025-02-01 06:00 UTC",
        "  ari next check    2025-02-01 12:00 UTC",
    ):
        assert expected in out
    assert "ari error" not in out


def test_domains_show_says_when_the_cas_renewal_information_failed(api, capsys):
    certificate = {
        **domain()["certificate"],
        "renew_at": "2025-03-02T10:30:00Z",
        "ari": {
            "window_start": None,
            "window_end": None,
            "explanation_url": "",
            "checked_at": None,
            "next_check": "2025-02-01T12:00:00Z",
            "error": "The CA answered HTTP 500.",
        },
    }
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, domain(certificate=certificate))
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}/events", 200, {"next": None, "results": []})
    assert run(api, "domains-show", NAME) == 0
    out = capsys.readouterr().out
    assert "  ari window        none yet" in out
    assert "  ari error         The CA answered HTTP 500." in out


def test_domains_show_json_is_the_apis_domain(api, capsys):
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, domain())
    assert run(api, "domains-show", NAME, "--json") == 0
    assert json.loads(capsys.readouterr().out) == domain()


def test_a_unicode_or_wildcard_name_is_sent_as_one_path_segment(api):
    assert run(api, "domains-show", "*.bücher.example") == 1
    assert api.seen[0].path == "/api/v1/apps/demo/domains/%2A.b%C3%BCcher.example"


SHOP = {
    "name": "shop",
    "region": "osc-fr1",
    "owner": "alice",
    "hostname": "shop.osc-fr1.example-paas.io",
    "domain_count": 2,
    "created": "2025-01-01T00:00:00Z",
}


def region(name: str) -> dict:
    return {"name": name, "domain_suffix": f"{name}.example-paas.io", "cname_target": "x", "ingress_ipv4": []}


def without_app(api: FakeApi, *argv: str) -> int:
    return main(list(argv), environ={"CERTWRIGHT_API_URL": api.url, "CERTWRIGHT_API_TOKEN": TOKEN})


def test_apps_lists_your_apps_without_needing_an_app(api, capsys):
    api.route("GET", "/api/v1/apps", 200, {"next": None, "results": [SHOP]})
    assert without_app(api, "apps") == 0
    assert capsys.readouterr().out.splitlines() == [
        "APP   REGION   HOSTNAME                      DOMAINS  CREATED",
        "shop  osc-fr1  shop.osc-fr1.example-paas.io  2        2025-01-01",
    ]


def test_apps_without_any_says_how_to_create_one(api, capsys):
    api.route("GET", "/api/v1/apps", 200, {"next": None, "results": []})
    assert without_app(api, "apps") == 0
    assert capsys.readouterr().out == "No apps yet: create one with `certwright apps-create NAME`.\n"


def test_apps_create_takes_the_platforms_only_region_and_says_how_to_add_a_domain(api, capsys):
    api.route("GET", "/api/v1/regions", 200, [region("osc-fr1")])
    api.route("POST", "/api/v1/apps", 201, SHOP)
    assert without_app(api, "apps-create", "shop") == 0
    assert api.seen[-1].body == {"name": "shop", "region": "osc-fr1"}
    assert capsys.readouterr().out.splitlines() == [
        "Created shop in osc-fr1: it answers at shop.osc-fr1.example-paas.io.",
        "Add a domain to it: certwright --app shop domains-add www.example.com",
    ]


def test_apps_create_among_several_regions_without_region_is_a_usage_error_naming_them(api, capsys):
    api.route("GET", "/api/v1/regions", 200, [region("osc-fr1"), region("osc-secnum-fr1")])
    assert without_app(api, "apps-create", "shop") == 2
    assert stderr_lines(capsys)[-1] == "certwright: error: give --region, one of: osc-fr1, osc-secnum-fr1"
    assert [seen.method for seen in api.seen] == ["GET"]


def test_apps_create_with_a_region_sends_it_and_a_taken_name_exits_1_with_the_apis_words(api, capsys):
    api.route("POST", "/api/v1/apps", 409, {"detail": "an app named shop already exists"})
    assert without_app(api, "apps-create", "--region", "osc-fr1", "shop") == 1
    assert [(seen.method, seen.body) for seen in api.seen] == [
        ("POST", {"name": "shop", "region": "osc-fr1"})
    ]
    assert stderr_lines(capsys) == ["certwright: an app named shop already exists"]


def test_domains_add_sends_the_name_and_letsencrypt_and_prints_the_records(api, capsys):
    api.route(
        "POST", "/api/v1/apps/demo/domains", 201, domain(status="pending_dns", status_label="Pending DNS")
    )
    assert run(api, "domains-add", "--no-letsencrypt", NAME) == 0
    assert api.seen[0].body == {"name": NAME, "letsencrypt": False}
    out = capsys.readouterr().out
    assert out.startswith(f"Added {NAME} to demo: Pending DNS.\n")
    assert f"  {NAME}. CNAME x." in out


def test_domains_ssl_sends_pem_converted_from_der_files(api, tmp_path, pki, issued, capsys):
    leaf, key = issued
    api.route("PATCH", f"/api/v1/apps/demo/domains/{NAME}", 200, domain(status="not_used"))
    code = run(
        api,
        "domains-ssl",
        "--cert",
        write(tmp_path, "leaf.der", der(leaf)),
        "--chain",
        write(tmp_path, "inter.der", der(pki.intermediate)),
        "--key",
        write(tmp_path, "key.der", key_der(key)),
        NAME,
    )
    assert code == 0
    body = api.seen[0].body
    assert set(body) == {"tlscert", "tlskey"}
    assert x509.load_pem_x509_certificates(body["tlscert"].encode()) == [leaf, pki.intermediate]
    assert same_key(serialization.load_pem_private_key(body["tlskey"].encode(), None), key)
    assert capsys.readouterr().out.startswith(f"Installed the custom certificate of {NAME}")


def test_domains_ssl_disable_deletes_the_certificate_and_takes_no_files(api, capsys):
    api.route("DELETE", f"/api/v1/apps/demo/domains/{NAME}/certificate", 200, domain())
    assert run(api, "domains-ssl", "--disable", NAME) == 0
    assert capsys.readouterr().out == (
        f"Removed the custom certificate of {NAME}; now serving: letsencrypt until 2025-04-01 (In use).\n"
    )
    assert run(api, "domains-ssl", "--disable", "--cert", "x.pem", NAME) == 2
    assert len(api.seen) == 1


def test_domains_remove_and_retry_print_one_line_or_json(api, capsys):
    api.route("DELETE", f"/api/v1/apps/demo/domains/{NAME}", 204)
    api.route("POST", f"/api/v1/apps/demo/domains/{NAME}/retry", 202, {"detail": "checking the domain now"})
    assert run(api, "domains-remove", NAME) == 0
    assert run(api, "domains-retry", NAME) == 0
    assert capsys.readouterr().out == f"Removed {NAME} from demo.\nchecking the domain now\n"
    assert run(api, "--json", "domains-remove", NAME) == 0
    assert json.loads(capsys.readouterr().out) == {"detail": f"Removed {NAME} from demo."}


def test_the_wrapper_script_runs_the_cli_and_its_help_documents_the_exit_codes():
    result = subprocess.run([str(ROOT / "certwright"), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    for line in ("exit codes:", "  3  authentication", "  4  server error (5xx)"):
        assert line in result.stdout


def test_python_m_cli_exits_2_on_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--app", "demo", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "invalid choice: 'no-such-command'" in result.stderr


def test_domains_revoke_and_replace_posts_and_prints_what_the_api_did(api, capsys):
    path = f"/api/v1/apps/demo/domains/{NAME}/revoke-and-replace"
    api.route("POST", path, 202, {"detail": f"{NAME}: ordering a new key and certificate"})
    assert run(api, "domains-revoke-and-replace", NAME) == 0
    assert [(seen.method, seen.path) for seen in api.seen] == [("POST", path)]
    out = capsys.readouterr().out
    assert f"{NAME}: ordering a new key and certificate" in out
    assert f"domains-show {NAME}" in out


def test_domains_revoke_and_replace_refused_exits_1_with_the_apis_reason(api, capsys):
    path = f"/api/v1/apps/demo/domains/{NAME}/revoke-and-replace"
    api.route("POST", path, 409, {"detail": f"{NAME}: a certificate order is already in flight"})
    assert run(api, "domains-revoke-and-replace", NAME) == 1
    assert stderr_lines(capsys) == [f"certwright: {NAME}: a certificate order is already in flight"]


def test_domains_show_prints_each_revoked_certificate_with_its_time_and_reason(api, capsys):
    revoked = [
        {
            "serial": "fa11",
            "fingerprint_sha256": "cd" * 32,
            "not_after": "2025-04-01T00:00:00Z",
            "revoked_at": "2025-02-03T04:05:00Z",
            "reason": "keyCompromise",
        }
    ]
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, domain(revoked_certificates=revoked))
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}/events", 200, {"results": []})
    assert run(api, "domains-show", NAME) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(None, 1)[1] for line in out if line.startswith("revoked ")] == [
        "serial fa11 at 2025-02-03 04:05 UTC (keyCompromise)"
    ]
    assert not any(line.startswith("revoked certificates") for line in out)
