"""The admin site: Django's, whose home is the operators' overview (dashboard/overview.py) above
the usual list of models, with a "retry now" / "renew now" button per domain that needs it."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from dashboard import overview as overview_data
from dashboard.charts import Series, stacked_bars
from domains.models import Domain
from domains.pauses import DomainPaused
from domains.services import retry_now

ENDING_SERIES = [
    Series("letsencrypt", "Let's Encrypt", "var(--cw-le)"),
    Series("custom", "Custom", "var(--cw-custom)"),
]
ACTIVITY_SERIES = [
    Series("issued", "Issued", "var(--cw-issued)"),
    Series("renewed", "Renewed", "var(--cw-renewed)"),
    Series("failed", "Failed", "var(--cw-failed)"),
]


class CertwrightAdminSite(admin.AdminSite):
    site_header = "Certwright"
    site_title = "Certwright"
    index_title = "Overview"
    index_template = "admin/certwright_index.html"

    def get_urls(self):
        return [
            path("overview/retry/<int:pk>/", self.admin_view(self.retry_view), name="overview_retry"),
            *super().get_urls(),
        ]

    def index(self, request: HttpRequest, extra_context=None):
        data = overview_data.build()
        ending = [(f"{day:%d %b}", f"{day:%Y-%m-%d}", counts) for day, counts in data.ending.items()]
        activity = [
            (f"{hour:%a %Hh}" if hour.hour == 0 else "", f"{hour:%Y-%m-%d %H:00} UTC", counts)
            for hour, counts in data.activity.items()
        ]
        context = {
            "overview": data,
            "can_retry": request.user.has_perm("domains.change_domain"),
            "ending_chart": stacked_bars(
                "Certificates ending per day, next 90 days", ending, ENDING_SERIES, tick_every=7
            ),
            "activity_chart": stacked_bars(
                "Certificates issued, renewed and failed orders per hour, last 7 days",
                activity,
                ACTIVITY_SERIES,
                tick_every=1,
            ),
            **(extra_context or {}),
        }
        return super().index(request, context)

    @staticmethod
    def _back(request: HttpRequest) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:index") + "#attention")

    def retry_view(self, request: HttpRequest, pk: int):
        return require_POST(self._retry)(request, pk)

    def _retry(self, request: HttpRequest, pk: int):
        if not request.user.has_perm("domains.change_domain"):
            messages.error(request, "You may not change domains.")
            return self._back(request)
        domain = get_object_or_404(Domain, pk=pk)
        try:
            messages.info(request, retry_now(domain))
        except DomainPaused as exc:
            messages.warning(request, str(exc))
        return self._back(request)
