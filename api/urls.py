"""/api/v1/ routes."""

from django.urls import path

from api import views

# Domain names carry dots, a leading `*.` or Unicode: anything but a slash.
NAME = "<str:name>"

urlpatterns = [
    path("regions", views.RegionList.as_view(), name="api-regions"),
    path("apps", views.AppList.as_view(), name="api-apps"),
    path("apps/<str:app>", views.AppDetail.as_view(), name="api-app"),
    path("apps/<str:app>/domains", views.DomainList.as_view(), name="api-domains"),
    path(f"apps/<str:app>/domains/{NAME}", views.DomainDetail.as_view(), name="api-domain"),
    path(
        f"apps/<str:app>/domains/{NAME}/certificate",
        views.DomainCertificate.as_view(),
        name="api-certificate",
    ),
    path(f"apps/<str:app>/domains/{NAME}/retry", views.DomainRetry.as_view(), name="api-retry"),
    path(
        f"apps/<str:app>/domains/{NAME}/revoke-and-replace",
        views.DomainRevokeAndReplace.as_view(),
        name="api-revoke-and-replace",
    ),
    path(f"apps/<str:app>/domains/{NAME}/events", views.DomainEvents.as_view(), name="api-events"),
]
