"""The overview and the lists in a real browser (Debian's headless Chromium through chromedriver,
tests/edge/browser.py): an operator logs in, reads the seeded counts and both charts, follows a
status to its filtered list and retries a failing domain from the overview; the pages log no error
in the console and axe-core (selenium-axe-python's bundled 4.9) finds no serious or critical
violation, in the light and the dark theme. Screenshots of each page go to RUN_DIR/screenshots
(or CERTWRIGHT_SCREENSHOTS: the README's come from there)."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from selenium_axe_python import Axe

from certificates.models import CertificateSource, Issuance, OrderState
from devstack.commands import web_command
from devstack.ports import free_port
from devstack.processes import ManagedProcess, http_ok
from domains.models import Domain, DomainStatus
from tests.conftest import ROOT, RUN_DIR, celery_subprocess_env
from tests.edge.browser import chromium
from tests.factories import AppFactory, CertificateFactory, DomainFactory, OrderFactory, UserFactory
from tests.integration.pointing import point_at_platform
from tests.integration.polling import unique_name
from tests.pki import key_pem

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DAY = datetime.timedelta(days=1)
PASSWORD = "a passphrase for the browser test"


@pytest.fixture(scope="module")
def admin_web(django_db_setup, redis_servers):
    """The web app under gunicorn with the admin's static files collected (WhiteNoise serves what
    it finds at start), as a deployment runs it."""
    env = celery_subprocess_env()
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    server = ManagedProcess("web-dashboard", web_command(f"127.0.0.1:{port}"), RUN_DIR / "logs", env=env)
    server.start()
    server.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/admin/login/"), timeout=30, what="answering")
    # The browser resolves only `localhost`, to this server (tests/edge/browser.py).
    yield port
    server.stop()


def screenshots() -> Path:
    folder = Path(os.environ.get("CERTWRIGHT_SCREENSHOTS") or RUN_DIR / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def serious_violations(driver) -> list[str]:
    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def assert_accessible(driver) -> None:
    found = serious_violations(driver)
    assert not found, f"{driver.current_url}:\n" + "\n".join(found)


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def seed() -> Domain:
    now = timezone.now()
    app = AppFactory()
    for index in range(3):
        domain = DomainFactory(app=app, name=f"shop{index}.example.com", status=DomainStatus.IN_USE)
        CertificateFactory(domain=domain, not_before=now - 80 * DAY, not_after=now + 10 * DAY)
    CertificateFactory(
        domain=DomainFactory(app=app, name="uploaded.example.com", status=DomainStatus.IN_USE),
        source=CertificateSource.CUSTOM,
        not_before=now - DAY,
        not_after=now + 40 * DAY,
    )
    for index in range(2):
        DomainFactory(
            app=app,
            name=f"new{index}.example.com",
            status=DomainStatus.PENDING_DNS,
            waiting_on="dns",
            last_error=(
                "new.example.com has no A, AAAA or CNAME record yet: add a CNAME to "
                "my-app.osc-fr1.example.net"
            ),
            next_attempt_at=now + datetime.timedelta(minutes=1),
        )
    DomainFactory(
        app=app,
        name="caa.example.com",
        status=DomainStatus.ACTION_REQUIRED,
        waiting_on="caa",
        last_error='A CAA record of caa.example.com allows another CA only: add 0 issue "letsencrypt.org"',
    )
    failing = DomainFactory(
        app=app,
        name="broken.example.com",
        status=DomainStatus.FAILING,
        waiting_on="ca",
        consecutive_failures=3,
        next_attempt_at=now + datetime.timedelta(hours=2),
        last_error="Let's Encrypt could not issue the certificate: the HTTP-01 challenge got a 404",
    )
    for index in range(4):
        Issuance.objects.create(
            registered_domain="example.com",
            names=[f"shop{index}.example.com"],
            fingerprint_sha256=f"{index:064x}",
            issued_at=now - datetime.timedelta(hours=index * 5),
            renewal=index % 2 == 1,
        )
    OrderFactory(domain=failing, state=OrderState.INVALID, finished=now - datetime.timedelta(hours=1))
    return failing


def sign_in(driver, username: str, arrived) -> None:
    """Fills the sign-in page the driver shows (the admin's or the tab's) and waits until `arrived`:
    the sign-in page's own address ends with its ?next=, so only the page that follows tells."""
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    WebDriverWait(driver, 10).until(arrived)


def log_in(driver, base: str) -> None:
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    driver.get(f"{base}/admin/login/?next=/admin/")
    sign_in(driver, "ops", lambda d: d.find_elements(By.CSS_SELECTOR, "a.cw-tile-link"))


def test_an_operator_reads_the_overview_follows_a_status_and_retries_a_failing_domain(admin_web, tmp_path):
    base = "http://localhost"
    failing = seed()
    shots = screenshots()
    home = tmp_path / "home"
    home.mkdir()
    with chromium(home, {"localhost": admin_web}, RUN_DIR / "logs") as browser:
        driver = browser.driver
        driver.set_window_size(1400, 2400)
        log_in(driver, base)

        tiles = {
            tile.get_attribute("href").rsplit("=", 1)[-1]: tile.find_element(By.CLASS_NAME, "cw-count").text
            for tile in driver.find_elements(By.CSS_SELECTOR, "a.cw-tile-link")
        }
        assert tiles["in_use"] == "4" and tiles["pending_dns"] == "2"
        assert tiles["failing"] == "1" and tiles["action_required"] == "1" and tiles["disabled"] == "0"
        assert "2 on DNS record" in driver.find_element(By.CSS_SELECTOR, ".cw-tiles").text
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.cw-chart")
        assert len(charts) == 2
        # Bars drawn: the three certificates ending in 10 days and the custom one in 40 (one bar
        # each day), the issuances of the last hours and the failed order.
        drawn = [len(chart.find_elements(By.CSS_SELECTOR, "rect:not(.cw-hit)")) for chart in charts]
        assert drawn[0] == 2 and drawn[1] >= 4
        attention = driver.find_element(By.ID, "attention").text
        assert "broken.example.com" in attention and "HTTP-01 challenge got a 404" in attention
        assert "caa.example.com" in attention
        assert_accessible(driver)
        driver.save_screenshot(str(shots / "overview.png"))

        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
        )
        driver.refresh()
        assert_accessible(driver)
        driver.save_screenshot(str(shots / "overview-dark.png"))
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        driver.refresh()

        driver.find_element(By.CSS_SELECTOR, "a.cw-tile-link[href$='status__exact=pending_dns']").click()
        WebDriverWait(driver, 10).until(lambda d: "status__exact=pending_dns" in d.current_url)
        listed = driver.find_element(By.ID, "result_list").text
        assert "new0.example.com" in listed and "new1.example.com" in listed
        assert "shop0.example.com" not in listed
        assert len(driver.find_elements(By.CSS_SELECTOR, "#result_list .cw-badge.cw-pending_dns")) == 2
        assert_accessible(driver)
        driver.save_screenshot(str(shots / "domain-list.png"))

        driver.get(f"{base}/admin/domains/domain/{failing.pk}/change/")
        assert_accessible(driver)
        driver.save_screenshot(str(shots / "domain.png"))

        driver.get(f"{base}/admin/")
        driver.find_element(By.CSS_SELECTOR, f"form[action$='/overview/retry/{failing.pk}/'] button").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist li"))
        assert (
            "broken.example.com: checking now"
            in driver.find_element(By.CSS_SELECTOR, ".messagelist").text.lower()
        )
        failing.refresh_from_db()
        assert failing.claim_token is not None and failing.consecutive_failures == 0

        assert console_errors(driver) == []


def badge_of(driver, name: str) -> str:
    anchor = "domain-" + name.replace(".", "-")
    return driver.find_element(By.CSS_SELECTOR, f"#{anchor} .cw-badge").text


def reload_until_badge(driver, name: str, wanted: str, timeout: float = 60) -> None:
    def shown(d) -> bool:
        d.refresh()
        return badge_of(d, name) == wanted

    WebDriverWait(driver, timeout, poll_frequency=1).until(shown, f"{name} shown as {wanted}")


def test_a_customer_adds_a_domain_sees_it_in_use_swaps_in_a_custom_certificate_and_back(
    issuance_stack, challtestsrv, app, trusted_pki, web_server, tmp_path
):
    # The session's web server (tests/conftest.py), where Pebble validates HTTP-01 too.
    port = int(os.environ["CERTWRIGHT_TEST_HTTP01_PORT"])
    base = "http://localhost"
    owner = app.owner
    owner.set_password(PASSWORD)
    owner.save()
    name = unique_name("tab")
    shots = screenshots()
    home = tmp_path / "home"
    home.mkdir()
    with chromium(home, {"localhost": port}, RUN_DIR / "logs") as browser:
        driver = browser.driver
        driver.set_window_size(1280, 1600)
        driver.get(f"{base}/apps/{app.name}/domains/")
        assert "/apps/login/" in driver.current_url
        sign_in(driver, owner.get_username(), lambda d: d.find_elements(By.ID, "cw-new-name"))
        assert driver.current_url.endswith(f"/apps/{app.name}/domains/")

        driver.find_element(By.ID, "cw-new-name").send_keys(name)
        driver.find_element(By.CSS_SELECTOR, "form.cw-add button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".cw-messages li"))
        assert badge_of(driver, name) == "Pending DNS"
        section = driver.find_element(By.ID, "domain-" + name.replace(".", "-"))
        records = [code.text for code in section.find_elements(By.CSS_SELECTOR, ".cw-records code")]
        assert any(record.startswith(f"{name}. CNAME ") for record in records), records
        assert any(record.startswith("_certwright-challenge.") or " TXT " in record for record in records), (
            records
        )
        assert_accessible(driver)
        driver.save_screenshot(str(shots / "domains-tab-pending.png"))

        # The customer sets the record; the platform's next check (retry now: at once) sees it.
        point_at_platform(challtestsrv, app, name)
        section.find_element(By.XPATH, ".//button[starts-with(normalize-space(.), 'Retry now')]").click()
        reload_until_badge(driver, name, "In use")
        section = driver.find_element(By.ID, "domain-" + name.replace(".", "-"))
        assert "Let's Encrypt certificate" in section.text
        driver.save_screenshot(str(shots / "domains-tab-in-use.png"))

        leaf, key = trusted_pki.leaf([name])
        (tmp_path / "site.crt").write_bytes(trusted_pki.chain_pem(leaf))
        (tmp_path / "site.key").write_bytes(key_pem(key))
        section.find_element(By.XPATH, ".//summary[normalize-space(.)='Custom certificate']").click()
        section.find_element(By.CSS_SELECTOR, "input[name=certificate]").send_keys(str(tmp_path / "site.crt"))
        section.find_element(By.CSS_SELECTOR, "input[name=private_key]").send_keys(str(tmp_path / "site.key"))
        section.find_element(By.XPATH, ".//button[starts-with(normalize-space(.), 'Validate')]").click()
        WebDriverWait(driver, 10).until(lambda d: "custom certificate applied" in d.page_source)
        # Applied at once: no worker in between.
        assert badge_of(driver, name) == "Not used"
        assert (
            "your custom certificate" in driver.find_element(By.ID, "domain-" + name.replace(".", "-")).text
        )
        assert_accessible(driver)
        driver.save_screenshot(str(shots / "domains-tab-custom.png"))

        section = driver.find_element(By.ID, "domain-" + name.replace(".", "-"))
        section.find_element(
            By.XPATH, ".//button[starts-with(normalize-space(.), 'Remove the custom certificate')]"
        ).click()
        WebDriverWait(driver, 10).until(lambda d: "custom certificate removed" in d.page_source)
        assert badge_of(driver, name) == "In use"
        assert console_errors(driver) == []

        # Another customer: the same address is a 404, and the domain is not in what they see.
        driver.delete_all_cookies()
        stranger = UserFactory(username=f"stranger-{name[:12]}")
        stranger.set_password(PASSWORD)
        stranger.save()
        driver.get(f"{base}/apps/login/")
        # Signed in, the customer lands on their apps: none.
        sign_in(driver, stranger.get_username(), lambda d: "You have no app yet" in d.page_source)
        response = browser.load(f"{base}/apps/{app.name}/domains/")
        assert name not in response.text
        assert "Not Found" in response.text or "no app named" in response.text
    assert Domain.objects.get(name=name).status == DomainStatus.IN_USE
