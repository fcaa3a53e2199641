"""Where the base image's Debian packages come from: the mirror in this machine's apt sources, in
either format apt reads (one-line `.list` files and deb822 `.sources` files)."""

from __future__ import annotations

import pytest

from devstack.docker_images import BuildFailed, base_recipe, debian_mirror

DEB822_WITH_SECURITY_FIRST = """\
Types: deb
URIs: http://security.mirror.test/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
# a comment inside the stanza
URIs: http://mirror.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


@pytest.fixture
def apt(tmp_path):
    sources_dir = tmp_path / "sources.list.d"
    sources_dir.mkdir()
    return tmp_path / "sources.list", sources_dir


def test_the_mirror_is_read_from_a_deb822_sources_file_skipping_the_security_archive(apt):
    sources_list, sources_dir = apt
    (sources_dir / "debian.sources").write_text(DEB822_WITH_SECURITY_FIRST)
    assert debian_mirror(sources_list, sources_dir) == "http://mirror.test/debian"


def test_a_disabled_deb822_stanza_and_deb_src_only_stanzas_are_not_the_mirror(apt):
    sources_list, sources_dir = apt
    (sources_dir / "debian.sources").write_text(
        "Types: deb\nURIs: http://off.test/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.test/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://on.test/debian\nSuites: bookworm\n"
    )
    assert debian_mirror(sources_list, sources_dir) == "http://on.test/debian"


def test_the_mirror_is_read_from_a_one_line_sources_list_with_options(apt):
    sources_list, sources_dir = apt
    sources_list.write_text(
        "# deb http://commented.test/debian bookworm main\n"
        "deb-src http://src.test/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian.gpg] http://mirror.test/debian bookworm main\n"
    )
    assert debian_mirror(sources_list, sources_dir) == "http://mirror.test/debian"


def test_a_machine_with_no_bookworm_source_gets_a_clear_error(apt):
    sources_list, sources_dir = apt
    sources_list.write_text("deb http://mirror.test/debian trixie main\n")
    (sources_dir / "other.list").write_text("deb https://vendor.test/apt stable main\n")
    with pytest.raises(BuildFailed, match="no apt source for Debian bookworm"):
        debian_mirror(sources_list, sources_dir)


def test_the_base_image_recipe_changes_with_its_package_list(monkeypatch):
    before = base_recipe()
    monkeypatch.setattr("devstack.docker_images.BASE_PACKAGES", ("python3",))
    assert base_recipe() != before
