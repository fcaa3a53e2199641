"""The platform's ACME account (registered once per directory) and ACME clients built on it.

Clients are cached per thread: building one fetches the directory, and a worker thread runs one
step at a time, so a cached ClientNetwork (with its nonce pool) is never shared between threads.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import josepy as jose
from acme import client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import IntegrityError, transaction

from certificates.histograms import ACME_REQUEST, endpoint_of, observe
from certificates.issuers import (
    IssuerMisconfigured,
    by_directory,
    clear_problem,
    eab_hmac_key,
    record_problem,
    tls_verify,
)
from certificates.issuers import label as issuer_label
from certificates.models import AcmeAccount
from certificates.sealing import seal

USER_AGENT = "certwright/0.1 (acme-python)"
NETWORK_TIMEOUT_SECONDS = 30

_local = threading.local()


def _new_account_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _jwk(account: AcmeAccount) -> jose.JWK:
    return jose.JWKEC.load(account.key.reveal())


class _Network(client.ClientNetwork):
    """The library's network, keeping the CA's Retry-After on the problems it raises (a 429's
    problem document does not say when to come back; its header does), and raising a 409's problem
    document as the problem it is (alreadyReplaced, RFC 9773): the library raises a bare
    ConflictError for any 409, losing it (an account that exists is a 200, not a 409)."""

    # The issuer's name, for the request histogram (certificates/histograms.py).
    issuer = ""

    def _send_request(self, method: str, url: str, *args, **kwargs):
        started = time.monotonic()
        status = "error"
        try:
            response = super()._send_request(method, url, *args, **kwargs)
            status = str(response.status_code)
            return response
        finally:
            observe(ACME_REQUEST, time.monotonic() - started, (self.issuer, endpoint_of(url), status))

    @classmethod
    def _check_response(cls, response, content_type=None):
        if response.status_code == 409 and response.headers.get("Content-Type", "").startswith(
            cls.JSON_ERROR_CONTENT_TYPE
        ):
            try:
                problem = messages.Error.from_json(response.json())
            except (ValueError, jose.DeserializationError):
                problem = None
            if problem is not None:
                problem.retry_after = response.headers.get("Retry-After")
                raise problem
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as problem:
            problem.retry_after = response.headers.get("Retry-After")
            raise


def _network(account: AcmeAccount | None, jwk: jose.JWK, directory_url: str) -> client.ClientNetwork:
    registration = None
    if account is not None and account.account_url:
        registration = messages.RegistrationResource(uri=account.account_url, body=messages.Registration())
    net = _Network(
        key=jwk,
        account=registration,
        alg=jose.ES256,
        verify_ssl=tls_verify(directory_url),
        user_agent=USER_AGENT,
        timeout=NETWORK_TIMEOUT_SECONDS,
    )
    # requests re-reads the proxy variables from the whole environment on every request (a
    # tenth of a step's CPU); read them once here instead. Verification is passed explicitly.
    proxies = urllib.request.getproxies()
    if "no" in proxies:
        proxies["no_proxy"] = proxies.pop("no")
    net.session.proxies = proxies
    net.session.trust_env = False
    net.issuer = issuer_label(directory_url)
    return net


def account_row(directory_url: str | None = None) -> AcmeAccount:
    """The account's row for `directory_url` (default ACME_DIRECTORY_URL), created with a new key
    if there is none, without contacting the CA: an order made with an unregistered account
    registers it at its first step (get_account)."""
    directory_url = directory_url or settings.ACME_DIRECTORY_URL
    account = AcmeAccount.objects.filter(directory_url=directory_url).first()
    if account is None:
        try:
            with transaction.atomic():
                account = AcmeAccount.objects.create(
                    directory_url=directory_url,
                    key=seal(_new_account_key_pem()),
                    contact=settings.ACME_CONTACT_EMAIL or "",
                )
        except IntegrityError:
            account = AcmeAccount.objects.get(directory_url=directory_url)
    return account


def get_account(directory_url: str | None = None) -> AcmeAccount:
    """The registered account at `directory_url` (default ACME_DIRECTORY_URL), registering it once.

    Safe under concurrency: the key row is created first under a unique constraint (a loser of the
    race uses the winner's key), and registering an already-registered key returns its account.
    """
    directory_url = directory_url or settings.ACME_DIRECTORY_URL
    account = account_row(directory_url)
    if account.account_url:
        return account
    jwk = _jwk(account)
    net = _network(None, jwk, directory_url)
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
    issuer = by_directory(directory_url)
    binding = None
    if issuer is not None and issuer.has_eab:
        # RFC 8555 section 7.3.4: the CA's key id, and a MAC over our account key by its HMAC key.
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=jwk.public_key(),
            kid=issuer.eab_kid,
            hmac_key=eab_hmac_key(issuer),
            directory=acme.directory,
        )
    registration = messages.NewRegistration.from_data(
        email=account.contact or None, terms_of_service_agreed=True, external_account_binding=binding
    )
    account_url = None
    for attempt in range(settings.ACME_STEP_RETRIES):
        try:
            account_url = acme.new_account(registration).uri
            break
        except errors.ConflictError as exc:
            # This key is already registered (another worker won the race): its URL is the answer.
            account_url = exc.location
            break
        except messages.Error as problem:
            # The library retries a bad nonce once; the CA may reject the retry's nonce too.
            if problem.code == "badNonce" and attempt < settings.ACME_STEP_RETRIES - 1:
                continue
            if issuer is not None and _refused_registration(problem):
                message = _registration_refused_message(issuer, problem)
                record_problem(issuer, message)
                raise IssuerMisconfigured(message) from None
            raise
    if issuer is not None:
        clear_problem(issuer)
    AcmeAccount.objects.filter(pk=account.pk, account_url="").update(account_url=account_url)
    account.refresh_from_db()
    return account


# Problems a CA answers newAccount with when it will not take the platform's account as configured
# (RFC 8555: externalAccountRequired, unauthorized and malformed for a wrong binding; Pebble says
# malformed or unauthorized for a bad MAC), as opposed to the CA being down.
_REFUSALS = {"externalAccountRequired", "unauthorized", "malformed", "rejectedIdentifier", "invalidContact"}


def _refused_registration(problem: messages.Error) -> bool:
    return (problem.code or "") in _REFUSALS


def _registration_refused_message(issuer, problem: messages.Error) -> str:
    detail = (problem.detail or problem.code or "no detail").strip()
    if problem.code == "externalAccountRequired" or (not issuer.has_eab and "external" in detail.lower()):
        fix = f"set eab_kid and eab_hmac_key for issuer {issuer.name} in ACME_ISSUERS"
    elif issuer.has_eab:
        fix = f"check eab_kid and eab_hmac_key of issuer {issuer.name} in ACME_ISSUERS"
    else:
        fix = f"check issuer {issuer.name} in ACME_ISSUERS and ACME_CONTACT_EMAIL"
    return (
        f"Issuer {issuer.name} ({issuer.directory_url}) refused to register the platform's ACME account: "
        f"{detail[:300]} ({problem.code}); an operator must {fix}."
    )


def reset_account(account: AcmeAccount) -> bool:
    """Forgets a registration the CA no longer knows (a test CA restarted): a new key is registered
    on next use. Conditional, so concurrent steps reset it once; returns whether this call did."""
    reset = AcmeAccount.objects.filter(pk=account.pk, account_url=account.account_url).update(
        key=seal(_new_account_key_pem()), account_url=""
    )
    forget_clients()
    return reset == 1


def client_for(account: AcmeAccount) -> client.ClientV2:
    """An ACME client signed with `account`'s key, cached for this thread."""
    cache = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
    cache_key = (account.pk, account.account_url, account.directory_url)
    acme = cache.get(cache_key)
    if acme is None:
        net = _network(account, _jwk(account), account.directory_url)
        acme = client.ClientV2(client.ClientV2.get_directory(account.directory_url, net), net)
        cache.clear()
        cache[cache_key] = acme
    return acme


class NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's `replaces` (the ARI identifier of the certificate this order
    renews), which the library's message lacks; like `profile`, left out of the JSON when empty."""

    replaces: str | None = jose.field("replaces", omitempty=True)


def place_order(
    acme: client.ClientV2, csr_pem: bytes, *, profile: str = "", replaces: str = ""
) -> messages.OrderResource:
    """`acme.new_order(csr_pem, profile=...)`, also naming the certificate it `replaces`: the
    library's own steps (identifiers from the CSR, the order, then each authorization read)."""
    csr = x509.load_pem_x509_csr(csr_pem)
    dns_names, ip_addresses = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in dns_names]
    identifiers += [
        messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(address)) for address in ip_addresses
    ]
    # None, not "": an empty field is omitted (the CA's default profile, no certificate replaced).
    order = NewOrder(identifiers=identifiers, profile=profile or None, replaces=replaces or None)
    response = acme._post(acme.directory["newOrder"], order)
    body = messages.Order.from_json(response.json())
    authorizations = [
        acme._authzr_from_response(acme._post_as_get(url), uri=url) for url in body.authorizations
    ]
    return messages.OrderResource(
        body=body, uri=response.headers.get("Location"), authorizations=authorizations, csr_pem=csr_pem
    )


# Pages of an account's orders list read at most (Pebble pages it by 3: 1,000 pages is 3,000 orders).
ORDERS_LIST_MAX_PAGES = 1000


def account_order_urls(acme: client.ClientV2) -> list[str]:
    """The URLs of the client's account's orders, through its orders list (RFC 8555 7.1.2.1) and
    each next page it links, or [] when the CA lists none (Let's Encrypt does not; Pebble does)."""
    account = acme._post_as_get(acme.net.account.uri).json()
    page_url = account.get("orders")
    urls: list[str] = []
    for _ in range(ORDERS_LIST_MAX_PAGES):
        if not page_url:
            break
        page = acme._post_as_get(page_url)
        urls += page.json().get("orders") or []
        page_url = page.links.get("next", {}).get("url")
    return urls


def read_order(acme: client.ClientV2, url: str) -> messages.OrderResource:
    """The order at `url` with its authorizations, as newOrder's answer carries them."""
    body = messages.Order.from_json(acme._post_as_get(url).json())
    authorizations = [
        acme._authzr_from_response(acme._post_as_get(link), uri=link) for link in body.authorizations
    ]
    return messages.OrderResource(body=body, uri=url, authorizations=authorizations)


def forget_clients() -> None:
    """Drops this thread's cached clients (after a network failure, start afresh)."""
    _local.clients = {}


def _key_jwk(key_pem: bytes) -> tuple[jose.JWK, jose.JWASignature]:
    """A certificate's private key as a JWK and the JWS algorithm it signs with."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {256: jose.ES256, 384: jose.ES384, 521: jose.ES512}
        return jose.JWKEC(key=key), algs[key.curve.key_size]
    return jose.JWKRSA(key=key), jose.RS256


def client_signed_by_key(directory_url: str, key_pem: bytes) -> client.ClientV2:
    """An ACME client whose requests are signed by a certificate's own key (a `jwk` header, no
    account): RFC 8555 section 7.6's revocation by the certificate's key. Not cached: it serves
    one request."""
    jwk, alg = _key_jwk(key_pem)
    net = _network(None, jwk, directory_url)
    net.alg = alg
    return client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
