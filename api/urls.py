"""/api/v1/ routes."""

from django.urls import path

from api import notification_views, views, webhook_views

# Domain names carry dots, a leading `*.` or Unicode: anything but a slash.
NAME = "<str:name>"

urlpatterns = [
    path("regions", views.RegionList.as_view(), name="api-regions"),
    path("issuers", views.IssuerList.as_view(), name="api-issuers"),
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
    path("notifications", notification_views.Notifications.as_view(), name="api-notifications"),
    path("apps/<str:app>/webhooks", webhook_views.WebhookList.as_view(), name="api-webhooks"),
    path("apps/<str:app>/webhooks/<int:endpoint>", webhook_views.WebhookDetail.as_view(), name="api-webhook"),
    path(
        "apps/<str:app>/webhooks/<int:endpoint>/rotate-secret",
        webhook_views.WebhookRotateSecret.as_view(),
        name="api-webhook-rotate-secret",
    ),
    path(
        "apps/<str:app>/webhooks/<int:endpoint>/enable",
        webhook_views.WebhookEnable.as_view(),
        name="api-webhook-enable",
    ),
    path(
        "apps/<str:app>/webhooks/<int:endpoint>/retry",
        webhook_views.WebhookRetry.as_view(),
        name="api-webhook-retry",
    ),
    path(
        "apps/<str:app>/webhooks/<int:endpoint>/deliveries",
        webhook_views.WebhookDeliveries.as_view(),
        name="api-webhook-deliveries",
    ),
    path(
        "apps/<str:app>/webhooks/<int:endpoint>/deliveries/<int:delivery>",
        webhook_views.WebhookDeliveryDetail.as_view(),
        name="api-webhook-delivery",
    ),
    path(
        "apps/<str:app>/webhooks/<int:endpoint>/deliveries/<int:delivery>/redeliver",
        webhook_views.WebhookRedeliver.as_view(),
        name="api-webhook-redeliver",
    ),
]
