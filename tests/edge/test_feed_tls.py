"""The agent reaches a feed over HTTPS verified against the CA given by --ca-file (an internal CA), and
refuses a feed whose certificate it cannot verify: keys never come over an unverified connection."""

from __future__ import annotations

import json
import ssl

import pytest

from tests.edge.conftest import wait_for
from tests.edge.feed_stub import FeedStub, candidate
from tests.pki import key_pem, pem


@pytest.fixture
def https_feed(pki, tmp_path):
    leaf, key = pki.leaf(["localhost"])
    certificate = tmp_path / "feed.pem"
    certificate.write_bytes(pem(leaf) + pem(pki.intermediate) + key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate)
    stub = FeedStub(tls=context)
    stub.url = stub.url.replace("127.0.0.1", "localhost")  # the name the certificate holds
    yield stub
    stub.close()


def _files_index(out):
    try:
        return json.loads((out / "index.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_an_https_feed_signed_by_the_ca_file_is_followed(https_feed, start_agent, pki, tmp_path):
    root = pki.write_root(tmp_path / "internal-ca.pem")
    www = candidate(pki, "www.example.com")
    https_feed.publish("www.example.com", [www])
    out = tmp_path / "files"
    agent = start_agent(https_feed, "--ca-file", root, "--driver", "files", "--files-dir", str(out))
    wait_for(lambda: "www.example.com" in _files_index(out), what="the name synced over HTTPS")
    assert "plain HTTP" not in agent.log_since_start()


def test_an_https_feed_the_agent_cannot_verify_gives_it_nothing(https_feed, start_agent, pki, tmp_path):
    https_feed.publish("www.example.com", [candidate(pki, "www.example.com")])
    out = tmp_path / "files"
    agent = start_agent(https_feed, "--driver", "files", "--files-dir", str(out))  # certifi's CAs only
    agent.wait_for_log("cannot reach")
    assert https_feed.count("snapshot") == 0 and _files_index(out) == {}
