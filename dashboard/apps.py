from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboards"


class CertwrightAdminConfig(AdminConfig):
    """Django's admin, with the operators' overview as its home (dashboard/admin_site.py)."""

    default_site = "dashboard.admin_site.CertwrightAdminSite"
