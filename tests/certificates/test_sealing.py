"""Private keys at rest: sealed with MultiFernet, never shown, re-sealed under the newest key."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from certificates.models import AcmeAccount, Certificate
from certificates.sealing import SealedSecret, SecretUnreadable, seal
from tests.factories import AcmeAccountFactory, CertificateFactory

PLAINTEXT = b"".join(
    [
        b"-----BEGIN PRIVATE KEY-----\n",
        b"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n",
        b"-----END PRIVATE KEY-----\n",
    ]
)


def test_seal_then_reveal_round_trips_and_the_token_is_not_the_plaintext():
    sealed = seal(PLAINTEXT)
    assert sealed.reveal() == PLAINTEXT
    assert PLAINTEXT not in sealed.token.encode()


def test_repr_and_str_show_neither_plaintext_nor_token():
    sealed = seal(PLAINTEXT)
    for shown in (repr(sealed), str(sealed), f"{sealed}"):
        assert "PRIVATE KEY" not in shown
        assert sealed.token not in shown
        assert "gAAAAA" not in shown


@pytest.mark.django_db
def test_model_field_refuses_plaintext_so_it_cannot_be_stored_by_mistake():
    account = AcmeAccountFactory.build()
    account.key = PLAINTEXT.decode()
    with pytest.raises(TypeError, match="refusing to store a plaintext secret"), transaction.atomic():
        account.save()
    assert not AcmeAccount.objects.exists()


@pytest.mark.django_db
def test_model_instance_repr_does_not_leak_its_key():
    certificate = CertificateFactory(private_key=seal(PLAINTEXT))
    loaded = Certificate.objects.get(pk=certificate.pk)
    assert isinstance(loaded.private_key, SealedSecret)
    assert loaded.private_key.reveal() == PLAINTEXT
    assert "PRIVATE KEY" not in repr(vars(loaded))
    assert loaded.private_key.token not in repr(vars(loaded))


def test_old_key_still_opens_after_a_new_key_is_put_first(settings):
    old_key = settings.KEY_ENCRYPTION_KEYS[0]
    sealed = seal(PLAINTEXT)
    settings.KEY_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    assert sealed.reveal() == PLAINTEXT


def test_a_dropped_key_gives_a_clear_error_not_a_fernet_traceback(settings):
    sealed = seal(PLAINTEXT)
    settings.KEY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SecretUnreadable, match="KEY_ENCRYPTION_KEYS"):
        sealed.reveal()


@pytest.mark.django_db
def test_reseal_secrets_command_rotates_every_sealed_column_to_the_newest_key(settings):
    old_key = settings.KEY_ENCRYPTION_KEYS[0]
    certificates = CertificateFactory.create_batch(3)
    account = AcmeAccountFactory()
    secrets_before = {c.pk: c.private_key.reveal() for c in certificates}

    new_key = Fernet.generate_key().decode()
    settings.KEY_ENCRYPTION_KEYS = [new_key, old_key]
    out = io.StringIO()
    call_command("reseal_secrets", "--batch-size", "2", stdout=out)
    assert "certificates.Certificate: 3 row(s) re-sealed" in out.getvalue()
    assert "certificates.AcmeAccount: 1 row(s) re-sealed" in out.getvalue()

    # With the old key gone, everything still opens: it was all re-sealed under the new one.
    settings.KEY_ENCRYPTION_KEYS = [new_key]
    for certificate in Certificate.objects.all():
        assert certificate.private_key.reveal() == secrets_before[certificate.pk]
    assert AcmeAccount.objects.get(pk=account.pk).key.reveal() == b'{"kty": "EC", "test": "account key"}'


@pytest.mark.django_db
def test_reseal_secrets_fails_clearly_when_a_secret_cannot_be_opened(settings):
    CertificateFactory()
    settings.KEY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="cannot be decrypted with any key in KEY_ENCRYPTION_KEYS"):
        call_command("reseal_secrets", stdout=io.StringIO())
