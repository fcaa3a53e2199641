"""Customers: the users who own apps and reach the API with their tokens. Not staff, no password
unless one is asked for. `manage.py customer` and the admin's Customers page both create them here."""

from __future__ import annotations

from django.contrib.auth import password_validation
from django.contrib.auth.validators import ASCIIUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet

from api.models import Customer
from api.routers import ROUTERS_USERNAME
from api.tokens import InvalidTokenName, check_token_name, create_token

# Certwright's own accounts: a customer of that name would be handed what the account is given
# (`manage.py router_token` gives the routers' user the right to fetch every private key).
RESERVED_NAMES = frozenset({ROUTERS_USERNAME})
SHOWN_NAME_LENGTH = 40
# What a customer's first token is called unless the operator says otherwise.
FIRST_CREDENTIAL_NAME = "CLI"


class CustomerRejected(ValueError):
    """A customer that cannot be created as asked; `field` is the input to blame."""

    def __init__(self, message: str, field: str = "username"):
        super().__init__(message)
        self.field = field


class CustomerExists(CustomerRejected):
    """A user of that name exists already (compared without case: `Alice` would pass for `alice`)."""

    def __init__(self, existing: Customer):
        super().__init__(f"a user named {existing.username} already exists")
        self.existing = existing


def customers() -> QuerySet[Customer]:
    """Every customer, with `app_count` and `active_tokens`: users neither staff nor superusers,
    less Certwright's own accounts."""
    return (
        Customer.objects.filter(is_staff=False, is_superuser=False)
        .exclude(username__in=RESERVED_NAMES)
        .annotate(
            app_count=Count("apps", distinct=True),
            active_tokens=Count("api_tokens", filter=Q(api_tokens__revoked__isnull=True), distinct=True),
        )
    )


def _shown(name: str) -> str:
    return repr(name if len(name) <= SHOWN_NAME_LENGTH else name[:SHOWN_NAME_LENGTH] + "…")


def check_new_customer(username: str, email: str = "") -> tuple[str, str]:
    """The name and e-mail address a new customer would get; raises CustomerRejected (or
    CustomerExists) saying what is wrong with them."""
    field = Customer._meta.get_field("username")
    try:
        # ASCII only on top of Django's rule, so that no customer can be a look-alike of another.
        field.clean(username, None)
        ASCIIUsernameValidator()(username)
    except ValidationError as exc:
        raise CustomerRejected(
            f"invalid customer name {_shown(username)}: {' '.join(exc.messages)}"
        ) from None
    if username in RESERVED_NAMES:
        raise CustomerRejected(f"the name {username} is reserved for Certwright's own account")
    existing = Customer.objects.filter(username__iexact=username).first()
    if existing is not None:
        raise CustomerExists(existing)
    email = Customer.objects.normalize_email(email.strip())
    if email:
        try:
            validate_email(email)
            Customer._meta.get_field("email").clean(email, None)
        except ValidationError:
            raise CustomerRejected(f"invalid e-mail address {_shown(email)}", field="email") from None
    return username, email


def create_customer(
    username: str, email: str = "", password: str | None = None, token_name: str = FIRST_CREDENTIAL_NAME
) -> tuple[Customer, str]:
    """Creates a customer and its first API token together; returns both. The token is shown once:
    only its hash is stored. Without `password` the customer has no usable one."""
    username, email = check_new_customer(username, email)
    try:
        token_name = check_token_name(token_name)
    except InvalidTokenName as exc:
        raise CustomerRejected(str(exc), field="token_name") from None
    customer = Customer(username=username, email=email, is_staff=False, is_superuser=False)
    if password is None:
        customer.set_unusable_password()
    else:
        try:
            password_validation.validate_password(password, customer)
        except ValidationError as exc:
            raise CustomerRejected(" ".join(exc.messages), field="password") from None
        customer.set_password(password)
    try:
        with transaction.atomic():
            customer.save()
            _, token = create_token(customer, token_name)
    except IntegrityError:
        # Most likely created by someone else between the check and the insert.
        existing = Customer.objects.filter(username__iexact=username).first()
        if existing is None:
            raise
        raise CustomerExists(existing) from None
    return customer, token
