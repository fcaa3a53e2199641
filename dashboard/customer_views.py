"""The customers' Domains tab: a page per app for its owner, server-rendered, driving the same
services as the REST API (domains/services.py, domains/custom_certificates.py) with the same
tenancy: another customer's app, or a domain of it, is a 404.

Every change is a POST with Django's CSRF check, answered by a redirect back to the tab with what
was done or why it was refused (nothing is half-saved: each service call is one transaction). An
upload's body is capped before Django reads any of it (PAGE_MAX_BODY_BYTES, api.middleware), and
each of its files before it is parsed (CustomCertificateForm).
"""

from __future__ import annotations

import functools
import logging

import redis
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from api.presenters import domain_page, present_domains
from domains.custom_certificates import remove_custom_certificate
from domains.domain_admin_forms import MAX_UPLOAD_BYTES, CustomCertificateForm
from domains.models import App, Domain, DomainEvent
from domains.names import InvalidDomainName, normalize_domain_name
from domains.pauses import DomainPaused
from domains.services import (
    DomainLimitReached,
    DomainNameTaken,
    add_domain,
    delete_domain,
    retry_now,
    set_letsencrypt,
)

logger = logging.getLogger(__name__)

HISTORY_ROWS = 10
TAB_DOMAINS = 500

# The seed's words for each status, and what the customer does next.
NEXT_STEP = {
    "pending_dns": "Add the DNS record below at your DNS provider; the platform checks it every minute.",
    "creating": "Nothing to do: the certificate is being issued.",
    "in_use": "Nothing to do: served over HTTPS, renewed automatically.",
    "not_used": "Your custom certificate is served; the Let's Encrypt one takes over if you remove it "
    "or it expires.",
    "action_required": "Do what the message says; the platform checks again every minute.",
    "failing": "The platform retries with a growing delay; you can retry now once you fixed the cause.",
    "disabled": "Let's Encrypt is turned off: upload a custom certificate, or turn Let's Encrypt on.",
}


# Failed sign-ins per user name and per address before both are refused for the window.
SIGN_IN_FAILURES = 10
SIGN_IN_WINDOW_SECONDS = 900


class CustomerLoginView(LoginView):
    """Django's sign-in, refused for SIGN_IN_WINDOW_SECONDS after SIGN_IN_FAILURES failures for one
    user name or from one address (counted in the cache, the broker's Redis), so a password cannot
    be guessed at the speed of the web processes."""

    template_name = "dashboard/login.html"
    redirect_authenticated_user = True

    def _keys(self) -> list[str]:
        name = (self.request.POST.get("username") or "").strip().lower()[:150]
        address = self.request.META.get("REMOTE_ADDR", "")
        return [f"sign-in-failures:user:{name}", f"sign-in-failures:address:{address}"]

    def post(self, request, *args, **kwargs):
        try:
            counts = cache.get_many(self._keys())
        except redis.RedisError:
            # The cache down must not lock everyone out.
            counts = {}
        if any(count >= SIGN_IN_FAILURES for count in counts.values()):
            form = self.get_form()
            form.errors.clear()
            form.add_error(
                None,
                f"Too many failed sign-ins: try again in {SIGN_IN_WINDOW_SECONDS // 60} minutes.",
            )
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for key in self._keys():
            try:
                cache.add(key, 0, SIGN_IN_WINDOW_SECONDS)
                cache.incr(key)
            except redis.RedisError as exc:
                logger.warning("a failed sign-in was not counted: %s", type(exc).__name__)
        return super().form_invalid(form)


def _app(request: HttpRequest, name: str) -> App:
    """The app `name` of the signed-in customer (any app for staff, `?region=` telling two apart)."""
    apps = App.objects.select_related("region")
    if not request.user.is_staff:
        apps = apps.filter(owner=request.user)
    found = list(apps.filter(name=name)[:2])
    if len(found) > 1:
        region = request.GET.get("region") or request.POST.get("region")
        found = [app for app in found if app.region.name == region]
    if len(found) != 1:
        raise Http404(f"no app named {name}")
    return found[0]


def _domain(app: App, raw_name: str) -> Domain:
    try:
        name = normalize_domain_name(raw_name)
    except InvalidDomainName:
        raise Http404(f"no domain {raw_name} on {app.name}") from None
    domain = Domain.objects.filter(app=app, name=name).first()
    if domain is None:
        raise Http404(f"no domain {name} on {app.name}")
    return domain


def _back(app: App, anchor: str = "") -> HttpResponseRedirect:
    url = reverse("domains-tab", args=[app.name])
    return HttpResponseRedirect(url + (f"#{anchor}" if anchor else ""))


def anchor_of(name: str) -> str:
    return "domain-" + name.replace(".", "-").replace("*", "wildcard")


@login_required
@require_GET
def apps_index(request: HttpRequest) -> HttpResponse:
    """Where sign-in leads: the customer's apps, each linking to its Domains tab (straight to the
    tab when there is one app)."""
    apps = list(
        App.objects.filter(owner=request.user).select_related("region").order_by("name", "region__name")
    )
    if len(apps) == 1:
        return HttpResponseRedirect(reverse("domains-tab", args=[apps[0].name]))
    return render(request, "dashboard/apps.html", {"apps": apps})


@login_required
@require_GET
def domains_tab(request: HttpRequest, app: str) -> HttpResponse:
    found = _app(request, app)
    page = list(domain_page(found)[:TAB_DOMAINS])
    # Beyond TAB_DOMAINS (an APP_DOMAIN_LIMIT raised past it), the page says how many it leaves out.
    total = domain_page(found).count() if len(page) == TAB_DOMAINS else len(page)
    for domain in page:
        domain.app = found
    shown = present_domains(page)
    history: dict[int, list[DomainEvent]] = {}
    latest = (
        DomainEvent.objects.filter(domain_id__in=[d.pk for d in page])
        .annotate(
            rank=Window(
                RowNumber(), partition_by=F("domain_id"), order_by=[F("created").desc(), F("pk").desc()]
            )
        )
        .filter(rank__lte=HISTORY_ROWS)
        .order_by("domain_id", "rank")
    )
    for event in latest:
        history.setdefault(event.domain_id, []).append(event)
    rows = [
        {
            **data,
            "pk": domain.pk,
            "anchor": anchor_of(domain.name),
            "next_step": NEXT_STEP.get(data["status"], ""),
            "history": history.get(domain.pk, []),
        }
        for domain, data in zip(page, shown, strict=True)
    ]
    return render(
        request,
        "dashboard/domains_tab.html",
        {
            "app": found,
            "domains": rows,
            "total": total,
            "upload_form": CustomCertificateForm(),
            "now": timezone.now(),
            "max_upload": MAX_UPLOAD_BYTES,
        },
    )


@login_required
@require_POST
def add(request: HttpRequest, app: str) -> HttpResponse:
    found = _app(request, app)
    raw = (request.POST.get("name") or "").strip()
    if not raw:
        messages.error(request, "Type the domain name to add, such as www.example.com.")
        return _back(found)
    try:
        domain = add_domain(found, raw)
    except InvalidDomainName as exc:
        messages.error(request, f"{raw}: {exc}")
        return _back(found)
    except (DomainNameTaken, DomainLimitReached) as exc:
        messages.error(request, str(exc))
        return _back(found)
    messages.success(request, f"{domain.name} added: {domain.get_status_display()}.")
    return _back(found, anchor_of(domain.name))


def domain_action(*, back_to_domain: bool = True):
    """A POST of the tab about one domain of the signed-in customer's app: the view is given the
    domain (a 404 for a name not on the app, or an app not theirs) and says what it did through
    messages; the answer is a redirect back to the tab, at the domain unless it is gone."""

    def decorate(view):
        @login_required
        @require_POST
        @functools.wraps(view)
        def action(request: HttpRequest, app: str, name: str) -> HttpResponse:
            found = _app(request, app)
            domain = _domain(found, name)
            domain.app = found
            view(request, domain)
            return _back(found, anchor_of(domain.name) if back_to_domain else "")

        return action

    return decorate


@domain_action(back_to_domain=False)
def remove(request: HttpRequest, domain: Domain) -> None:
    delete_domain(domain)
    messages.success(request, f"{domain.name} removed: its certificates and keys are deleted.")


@domain_action()
def letsencrypt(request: HttpRequest, domain: Domain) -> None:
    enabled = request.POST.get("enabled") == "on"
    set_letsencrypt(domain, enabled)
    messages.success(
        request,
        f"{domain.name}: Let's Encrypt turned on, checked now."
        if enabled
        else f"{domain.name}: Let's Encrypt turned off; the platform will not ask for a certificate.",
    )


@domain_action()
def retry(request: HttpRequest, domain: Domain) -> None:
    try:
        messages.info(request, retry_now(domain))
    except DomainPaused as exc:
        messages.warning(request, str(exc))


@domain_action()
def upload(request: HttpRequest, domain: Domain) -> None:
    form = CustomCertificateForm(request.POST, request.FILES)
    stored = form.install(domain) if form.is_valid() else None
    if stored is None:
        messages.error(request, f"{domain.name}: nothing uploaded: {form.problems()}")
    else:
        messages.success(
            request,
            f"{domain.name}: custom certificate applied, served now until {stored.not_after:%Y-%m-%d}.",
        )


@domain_action()
def remove_certificate(request: HttpRequest, domain: Domain) -> None:
    if remove_custom_certificate(domain):
        messages.success(request, f"{domain.name}: custom certificate removed; Let's Encrypt's is served.")
    else:
        messages.warning(request, f"{domain.name} has no custom certificate.")


def embedding(get_response):
    """The tab may be framed by the origins of DOMAINS_TAB_FRAME_ANCESTORS (the platform's own
    dashboard), and by no other."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if request.path.startswith("/apps/") and settings.DOMAINS_TAB_FRAME_ANCESTORS:
            response["Content-Security-Policy"] = "frame-ancestors 'self' " + " ".join(
                settings.DOMAINS_TAB_FRAME_ANCESTORS
            )
            response.xframe_options_exempt = True
        return response

    return middleware
