"""The customers' Domains tab, under /apps/ (dashboard/customer_views.py)."""

from django.contrib.auth.views import LogoutView
from django.urls import path

from dashboard import customer_views as views

urlpatterns = [
    path("", views.apps_index, name="customer-apps"),
    path("login/", views.CustomerLoginView.as_view(), name="customer-login"),
    path("logout/", LogoutView.as_view(next_page="customer-login"), name="customer-logout"),
    path("<str:app>/domains/", views.domains_tab, name="domains-tab"),
    path("<str:app>/domains/add", views.add, name="domains-tab-add"),
    path("<str:app>/domains/<str:name>/remove", views.remove, name="domains-tab-remove"),
    path("<str:app>/domains/<str:name>/letsencrypt", views.letsencrypt, name="domains-tab-letsencrypt"),
    path("<str:app>/domains/<str:name>/retry", views.retry, name="domains-tab-retry"),
    path("<str:app>/domains/<str:name>/certificate", views.upload, name="domains-tab-certificate"),
    path(
        "<str:app>/domains/<str:name>/certificate/remove",
        views.remove_certificate,
        name="domains-tab-remove-certificate",
    ),
]
