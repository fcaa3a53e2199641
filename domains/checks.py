"""`manage.py check --deploy`: settings that are valid on their own but not with the CA."""

from __future__ import annotations

from django.core import checks

from domains.profiles import ProfileUnchecked, platform_profile_problem


@checks.register(checks.Tags.compatibility, deploy=True)
def acme_profile_offered(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """ACME_PROFILE must be a profile the CA's directory offers (asked only with --deploy: it is a
    request to the CA)."""
    try:
        problem = platform_profile_problem()
    except ProfileUnchecked as exc:
        return [checks.Warning(str(exc), id="certwright.W001")]
    return [checks.Error(problem, id="certwright.E001")] if problem else []
