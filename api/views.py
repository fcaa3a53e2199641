"""The customer API under /api/v1/: thin views over the domain and certificate services.

Tenancy: a user sees and changes only the apps they own (staff see all); anything else is a 404,
never a 403, so the API does not tell whether someone else's app exists.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from api.pagination import ByName, NewestFirst
from api.parsers import MAX_JSON_DEPTH
from api.presenters import domain_page, present_domains, with_served
from api.serializers import (
    AppSerializer,
    DomainCreateSerializer,
    DomainSerializer,
    DomainUpdateSerializer,
    ErrorSerializer,
    EventSerializer,
    IssuerSerializer,
    MessageSerializer,
    RegionSerializer,
)
from certificates.custom import UploadRejected
from certificates.issuers import CLOSED, breaker_states
from certificates.issuers import configured as configured_issuers
from domains.custom_certificates import install_custom_certificate, remove_custom_certificate
from domains.issuer_choice import UnknownIssuer, pin_issuer
from domains.models import App, Domain, DomainEvent, DomainStatus, Region
from domains.names import InvalidDomainName, normalize_domain_name
from domains.profiles import check_profile
from domains.revocations import RevokeAndReplaceRefused, revoke_and_replace
from domains.services import (
    DomainLimitReached,
    DomainNameTaken,
    DomainPaused,
    ProfileRefused,
    ProfileUnchecked,
    add_domain,
    delete_domain,
    move_domain,
    retry_now,
    set_letsencrypt,
    set_profile,
)

# What a 400 holds: a list of messages per field, or `detail` alone.
BAD_REQUEST = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
ERRORS = {
    400: OpenApiResponse(
        BAD_REQUEST,
        description="Invalid input: a message per field, or `detail` for a body that cannot be read "
        f"(not JSON, not UTF-8, nested deeper than {MAX_JSON_DEPTH} levels).",
    ),
    401: OpenApiResponse(ErrorSerializer, description="No valid API token."),
    404: OpenApiResponse(ErrorSerializer, description="No such app or domain (or not yours)."),
    411: OpenApiResponse(
        ErrorSerializer,
        description="A chunked body, on a server that cannot de-chunk it: send Content-Length.",
    ),
    413: OpenApiResponse(
        ErrorSerializer,
        description="The request body is larger than API_MAX_BODY_BYTES (refused unread; a chunked body "
        "is read no further).",
    ),
    429: OpenApiResponse(ErrorSerializer, description="Too many writes with this token; retry later."),
    503: OpenApiResponse(
        ErrorSerializer,
        description="The CA could not be asked whether it offers the chosen profile; nothing was changed.",
    ),
}
# Upload fields of the API, by the field the certificate checks blame.
UPLOAD_FIELDS = {"cert": "tlscert", "chain": "tlscert", "key": "tlskey", "passphrase": "tlskey_passphrase"}


def _errors(*codes: int) -> dict:
    return {code: ERRORS[code] for code in codes}


def visible_apps(request):
    apps = App.objects.select_related("region", "owner")
    return apps if request.user.is_staff else apps.filter(owner=request.user)


def get_app(request, name: str) -> App:
    found = list(visible_apps(request).filter(name=name)[:2])
    if len(found) != 1:
        # Two apps of that name (in two regions) are only visible to staff: ?region= tells them apart.
        region = request.query_params.get("region")
        found = [app for app in found if app.region.name == region] if region else []
        if len(found) != 1:
            raise Http404(f"no app named {name}")
    return found[0]


def get_domain(request, app_name: str, raw_name: str) -> Domain:
    app = get_app(request, app_name)
    try:
        name = normalize_domain_name(raw_name)
    except InvalidDomainName:
        raise Http404(f"no domain {raw_name} on {app_name}") from None
    domain = Domain.objects.select_related("app__region").filter(app=app, name=name).first()
    if domain is None:
        raise Http404(f"no domain {name} on {app_name}")
    return domain


def _upload_error(exc: UploadRejected) -> ValidationError:
    return ValidationError({UPLOAD_FIELDS.get(exc.field or "", "tlscert"): [str(exc)]})


def _conflict(message: str) -> Response:
    return Response({"detail": message}, status=status.HTTP_409_CONFLICT)


def _profile_unchecked(exc: ProfileUnchecked) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


def _app_data(app: App, domain_count: int | None = None) -> dict:
    return {
        "name": app.name,
        "region": app.region.name,
        "owner": app.owner.get_username(),
        "hostname": app.default_hostname,
        "domain_count": domain_count if domain_count is not None else app.domains.count(),
        "created": app.created,
    }


class RegionList(GenericAPIView):
    serializer_class = RegionSerializer
    pagination_class = None

    @extend_schema(responses={200: RegionSerializer(many=True), **_errors(401)})
    def get(self, request):
        """The regions apps can live in, with the addresses and names custom domains point at."""
        regions = Region.objects.order_by("name")
        return Response(RegionSerializer(regions, many=True).data)


class IssuerList(GenericAPIView):
    serializer_class = IssuerSerializer
    pagination_class = None

    @extend_schema(responses={200: IssuerSerializer(many=True), **_errors(401)})
    def get(self, request):
        """The certificate authorities the platform orders from, in order, with the CAA names that
        allow each and whether it is failing now (its circuit breaker)."""
        states = breaker_states()
        issuers = [
            {
                "name": issuer.name,
                "primary": position == 0,
                "caa": list(issuer.caa_identities),
                "state": states.get(issuer.name, CLOSED),
            }
            for position, issuer in enumerate(configured_issuers())
        ]
        return Response(IssuerSerializer(issuers, many=True).data)


class AppList(GenericAPIView):
    serializer_class = AppSerializer
    pagination_class = ByName

    def get_queryset(self):
        return visible_apps(self.request).annotate(domain_count=Count("domains")).order_by("name")

    @extend_schema(responses={200: AppSerializer(many=True), **_errors(400, 401)})
    def get(self, request):
        """Your apps (every app, for staff)."""
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([_app_data(app, app.domain_count) for app in page])

    @extend_schema(
        request=AppSerializer,
        responses={
            201: AppSerializer,
            409: OpenApiResponse(ErrorSerializer),
            **_errors(400, 401, 411, 413, 429),
        },
    )
    def post(self, request):
        """Creates an app in a region; its name is unique across the platform."""
        data = AppSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        region = Region.objects.filter(name=data.validated_data["region"]).first()
        if region is None:
            raise ValidationError({"region": [f"no region named {data.validated_data['region']}"]})
        name = data.validated_data["name"]
        with transaction.atomic():
            if App.objects.select_for_update().filter(name=name).exists():
                return _conflict(f"an app named {name} already exists")
            app = App.objects.create(owner=request.user, region=region, name=name)
        return Response(_app_data(app, 0), status=status.HTTP_201_CREATED)


class AppDetail(GenericAPIView):
    serializer_class = AppSerializer

    @extend_schema(responses={200: AppSerializer, **_errors(401, 404)})
    def get(self, request, app):
        """One app."""
        return Response(_app_data(get_app(request, app)))

    @extend_schema(responses={204: None, **_errors(401, 404, 429)})
    def delete(self, request, app):
        """Deletes the app and every domain of it (their orders stop, their keys are purged)."""
        found = get_app(request, app)
        with transaction.atomic():
            for domain in Domain.objects.filter(app=found):
                delete_domain(domain)
            found.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


def _present(domain: Domain) -> dict:
    """One domain as the API shows it, read again (after a change) with what is served."""
    fresh = with_served(Domain.objects.filter(pk=domain.pk)).get()
    fresh.app = domain.app
    return present_domains([fresh])[0]


class DomainList(GenericAPIView):
    serializer_class = DomainSerializer
    pagination_class = ByName

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status", str, enum=DomainStatus.values, description="Only domains in this status."
            ),
            OpenApiParameter("page_size", int, description="Domains per page (at most 500)."),
        ],
        responses={200: DomainSerializer(many=True), **_errors(400, 401, 404)},
    )
    def get(self, request, app):
        """The app's domains, by name, with what is served, DNS, and quota."""
        found = get_app(request, app)
        domains = domain_page(found)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in DomainStatus.values:
                raise ValidationError({"status": [f"one of {', '.join(DomainStatus.values)}"]})
            domains = domains.filter(status=wanted)
        page = self.paginate_queryset(domains)
        for domain in page:
            domain.app = found
        return self.get_paginated_response(present_domains(page))

    @extend_schema(
        request=DomainCreateSerializer,
        responses={
            201: DomainSerializer,
            409: OpenApiResponse(ErrorSerializer, description="In use by another app, or the app's limit."),
            **_errors(400, 401, 404, 411, 413, 429, 503),
        },
    )
    def post(self, request, app):
        """Adds a domain; with tlscert/tlskey, its custom certificate is checked first and nothing is
        added when it is rejected."""
        found = get_app(request, app)
        data = DomainCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            domain = add_domain(
                found,
                values["name"],
                letsencrypt=values["letsencrypt"],
                cert=values["tlscert"].encode() if "tlscert" in values else None,
                key=values["tlskey"].encode() if "tlskey" in values else None,
                passphrase=values.get("tlskey_passphrase"),
                profile=values["profile"],
                issuer=values["issuer"],
            )
        except UnknownIssuer as exc:
            raise ValidationError({"issuer": [str(exc)]}) from None
        except InvalidDomainName as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        except ProfileRefused as exc:
            raise ValidationError({"profile": [str(exc)]}) from None
        except ProfileUnchecked as exc:
            return _profile_unchecked(exc)
        except UploadRejected as exc:
            raise _upload_error(exc) from None
        except (DomainNameTaken, DomainLimitReached) as exc:
            return _conflict(str(exc))
        return Response(_present(domain), status=status.HTTP_201_CREATED)


class DomainDetail(GenericAPIView):
    serializer_class = DomainSerializer

    @extend_schema(responses={200: DomainSerializer, **_errors(401, 404)})
    def get(self, request, app, name):
        """One domain."""
        return Response(_present(get_domain(request, app, name)))

    @extend_schema(
        request=DomainUpdateSerializer,
        responses={200: DomainSerializer, **_errors(400, 401, 404, 411, 413, 429, 503)},
    )
    def patch(self, request, app, name):
        """Uploads a custom certificate (tlscert, tlskey, tlskey_passphrase), turns Let's Encrypt on or
        off, chooses the CA profile, pins the domain to a certificate authority (issuer), or (staff)
        moves the domain to another app."""
        domain = get_domain(request, app, name)
        data = DomainUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        target = None
        if "app" in values:
            if not request.user.is_staff:
                raise ValidationError({"app": ["only staff can move a domain to another app"]})
            target = App.objects.filter(name=values["app"]).first()
            if target is None:
                raise ValidationError({"app": [f"no app named {values['app']}"]})
        try:
            # Asked before anything changes (the CA's answer is cached for set_profile below).
            if "profile" in values:
                check_profile(values["profile"])
        except ProfileRefused as exc:
            raise ValidationError({"profile": [str(exc)]}) from None
        except ProfileUnchecked as exc:
            return _profile_unchecked(exc)
        try:
            # All or nothing: a refused part (a certificate, a full app) undoes the others.
            with transaction.atomic():
                if "tlscert" in values:
                    install_custom_certificate(
                        domain,
                        values["tlscert"].encode(),
                        key=values["tlskey"].encode(),
                        passphrase=values.get("tlskey_passphrase"),
                    )
                if "letsencrypt" in values:
                    set_letsencrypt(domain, values["letsencrypt"])
                if "profile" in values:
                    set_profile(domain, values["profile"])
                if "issuer" in values:
                    pin_issuer(domain, values["issuer"])
                if target is not None:
                    move_domain(domain, target)
        except UploadRejected as exc:
            raise _upload_error(exc) from None
        except UnknownIssuer as exc:
            raise ValidationError({"issuer": [str(exc)]}) from None
        except DomainLimitReached as exc:
            return _conflict(str(exc))
        except ProfileRefused as exc:
            # The CA withdrew it between the check and the change (its cache expired): nothing changed.
            raise ValidationError({"profile": [str(exc)]}) from None
        except ProfileUnchecked as exc:
            return _profile_unchecked(exc)
        return Response(_present(domain))

    @extend_schema(responses={204: None, **_errors(401, 404, 429)})
    def delete(self, request, app, name):
        """Removes the domain: its order stops, its certificates and keys are purged."""
        delete_domain(get_domain(request, app, name))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DomainCertificate(GenericAPIView):
    serializer_class = DomainSerializer

    @extend_schema(responses={200: DomainSerializer, **_errors(401, 404, 429)})
    def delete(self, request, app, name):
        """Removes the custom certificate; the Let's Encrypt one (if any) is served at once."""
        domain = get_domain(request, app, name)
        if not remove_custom_certificate(domain):
            raise Http404(f"{domain.name} has no custom certificate")
        return Response(_present(domain))


class DomainRetry(GenericAPIView):
    serializer_class = MessageSerializer

    @extend_schema(
        request=None,
        responses={
            202: MessageSerializer,
            409: OpenApiResponse(
                ErrorSerializer,
                description="Let's Encrypt paused the name: only the platform's operators can lift it.",
            ),
            **_errors(401, 404, 411, 413, 429),
        },
    )
    def post(self, request, app, name):
        """Checks the domain, continues its order or renews its certificate now, backoff reset;
        409 while Let's Encrypt has the name paused (only the platform's operators can lift that)."""
        domain = get_domain(request, app, name)
        try:
            return Response({"detail": retry_now(domain)}, status=status.HTTP_202_ACCEPTED)
        except DomainPaused as exc:
            return _conflict(str(exc))


class DomainRevokeAndReplace(GenericAPIView):
    serializer_class = MessageSerializer

    @extend_schema(
        request=None,
        responses={
            202: MessageSerializer,
            409: OpenApiResponse(
                ErrorSerializer,
                description="Nothing to revoke and replace (no valid Let's Encrypt certificate, Let's "
                "Encrypt off), an order already in flight, or no quota token now; nothing was ordered.",
            ),
            **_errors(401, 404, 411, 413, 429),
        },
    )
    def post(self, request, app, name):
        """Key compromise: orders a new key and certificate for the domain, serves it, then revokes
        the old certificate at the CA with reason keyCompromise."""
        domain = get_domain(request, app, name)
        try:
            message = revoke_and_replace(domain)
        except RevokeAndReplaceRefused as exc:
            return _conflict(str(exc))
        return Response({"detail": message}, status=status.HTTP_202_ACCEPTED)


class DomainEvents(GenericAPIView):
    serializer_class = EventSerializer
    pagination_class = NewestFirst

    @extend_schema(responses={200: EventSerializer(many=True), **_errors(400, 401, 404)})
    def get(self, request, app, name):
        """The domain's history, newest first: each status change with its reason."""
        domain = get_domain(request, app, name)
        page = self.paginate_queryset(DomainEvent.objects.filter(domain=domain))
        return self.get_paginated_response(EventSerializer(page, many=True).data)
