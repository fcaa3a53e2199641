"""The CA's directory read raw for `renewalInfo` (certificates/directory.py): cached per directory
per process, failures not cached, anything but a small JSON object refused with a clear message."""

from __future__ import annotations

import pytest

from certificates import directory
from certificates.directory import DirectoryUnavailable, renewal_info_base
from tests.ari_stub_ca import StubCA


@pytest.fixture
def ca():
    directory.forget_directories()
    stub = StubCA()
    yield stub
    stub.stop()
    directory.forget_directories()


def test_the_renewal_info_url_is_read_once_and_cached(ca):
    assert renewal_info_base(ca.directory_url) == f"{ca.base}/renewal-info/"
    assert renewal_info_base(ca.directory_url) == f"{ca.base}/renewal-info/"
    assert ca.requests == ["/dir"]


def test_the_cache_expires_so_a_ca_that_stops_offering_ari_is_noticed(ca, monkeypatch):
    assert renewal_info_base(ca.directory_url) is not None
    ca.ari = False
    assert renewal_info_base(ca.directory_url) is not None
    monkeypatch.setattr(directory, "DIRECTORY_CACHE_SECONDS", 0.0)
    assert renewal_info_base(ca.directory_url) is None
    assert ca.requests == ["/dir", "/dir"]


def test_a_failed_read_is_not_cached(ca):
    ca.directory_answer = (503, b"busy")
    with pytest.raises(DirectoryUnavailable, match=r"answered HTTP 503"):
        renewal_info_base(ca.directory_url)
    ca.directory_answer = None
    assert renewal_info_base(ca.directory_url) == f"{ca.base}/renewal-info/"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ((200, b"<html>"), "not a JSON object"),
        ((200, b"[]"), "not a JSON object"),
        ((200, b'{"x": "' + b"a" * 70000 + b'"}'), "is larger than 64 KiB"),
    ],
)
def test_anything_but_a_small_json_object_is_refused(ca, answer, says):
    ca.directory_answer = answer
    with pytest.raises(DirectoryUnavailable, match=says):
        renewal_info_base(ca.directory_url)


def test_a_renewal_info_that_is_not_a_web_url_means_no_ari(ca):
    ca.directory_answer = (
        200,
        b'{"newOrder": "https://ca.example/order", "renewalInfo": "javascript:alert(1)"}',
    )
    assert renewal_info_base(ca.directory_url) is None


def test_an_unreachable_directory_says_so():
    directory.forget_directories()
    with pytest.raises(DirectoryUnavailable, match=r"could not be read: cannot connect"):
        renewal_info_base("http://127.0.0.1:9/dir")
