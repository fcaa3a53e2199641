"""Certwright's URLs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import routers
from api.monitoring import healthz, metrics

admin.site.site_header = "Certwright"
admin.site.site_title = "Certwright"

urlpatterns = [
    path("admin/", admin.site.urls),
    # The customers' Domains tab (dashboard/customer_views.py).
    path("apps/", include("dashboard.customer_urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/", include("api.urls")),
    path("routers/v1/certificate", routers.certificate, name="routers-certificate"),
    path("routers/v1/changes", routers.changes, name="routers-changes"),
    path("routers/v1/snapshot", routers.snapshot_view, name="routers-snapshot"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

# Errors under /api/ answer JSON; Django's pages elsewhere.
handler400 = "api.errors.bad_request"
handler403 = "api.errors.permission_denied"
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"
