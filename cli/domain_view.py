"""How the CLI prints a domain: every field the API gives as `key  value` rows (a field it has no
layout for is shown as given), and the short forms the lists use."""

from __future__ import annotations

from typing import Any

from cli.output import day, duration, on_off, when


def served(certificate: dict | None) -> str:
    if not certificate:
        return "-"
    return f"{certificate.get('source', '?')} until {day(certificate.get('not_after'))}"


def _value(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_value(item) for item in value)
    return str(value)


def generic_rows(key: str, value: Any, indent: str = "") -> list[tuple[str, str]]:
    """`key  value` rows for a field this CLI has no layout for (such as `ownership`)."""
    label = indent + key.replace("_", " ")
    if isinstance(value, dict) and value:
        rows = [(label, "")]
        for sub, item in value.items():
            rows += generic_rows(sub, item, indent + "  ")
        return rows
    if key.endswith("_at") and isinstance(value, str):
        return [(label, when(value))]
    return [(label, _value(value))]


def _dns_text(dns: dict) -> str:
    state = {True: "ok", False: "not ok", None: "not checked"}.get(dns.get("ok"), "?")
    return f"{state}: {dns.get('message') or '-'}"


def _quota_text(quota: dict) -> str:
    left = quota.get("tokens_left")
    text = (
        f"{'?' if left is None else left} of {quota.get('limit')} certificates left for "
        f"{quota.get('registered_domain')} per {duration(int(quota.get('period_seconds') or 0))}"
    )
    if quota.get("next_token_at"):
        text += f", next at {when(quota['next_token_at'])}"
    return text


KNOWN_FIELDS = {
    "name",
    "unicode_name",
    "app",
    "status",
    "status_label",
    "letsencrypt",
    "profile",
    "effective_profile",
    "issuer",
    "custom_certificate",
    "certificate",
    "revoked_certificates",
    "dns",
    "next_attempt_at",
    "last_error",
    "quota",
    "created",
}


def _source_text(certificate: dict) -> str:
    """Where the certificate comes from: uploaded, or which of the platform's CAs issued it; and
    its X.509 issuer."""
    source = certificate.get("source", "?")
    by = f" from {certificate['issued_by']}" if certificate.get("issued_by") else ""
    return f"{source}{by}, issued by {certificate.get('issuer', '?')}"


def renewal_rows(certificate: dict) -> list[tuple[str, str]]:
    """When a Let's Encrypt certificate is renewed and what the CA's renewal information (ARI,
    RFC 9773) last said; nothing for a custom certificate."""
    if certificate.get("source") != "letsencrypt":
        return []
    rows = []
    if "renew_at" in certificate:
        rows.append(
            ("  renewal", when(certificate["renew_at"]) if certificate["renew_at"] else "not scheduled")
        )
    ari = certificate.get("ari")
    if isinstance(ari, dict):
        start, end = ari.get("window_start"), ari.get("window_end")
        rows.append(("  ari window", f"{when(start)} to {when(end)}" if start and end else "none yet"))
        if ari.get("explanation_url"):
            rows.append(("  ari explanation", ari["explanation_url"]))
        rows.append(("  ari checked", when(ari.get("checked_at"))))
        rows.append(
            ("  ari next check", when(ari.get("next_check")) if ari.get("next_check") else "not checked")
        )
        if ari.get("error"):
            rows.append(("  ari error", ari["error"]))
    return rows


def profile_text(domain: dict) -> str:
    """The CA profile the domain's next certificate is ordered under, and where that comes from."""
    chosen = domain.get("profile") or ""
    effective = domain.get("effective_profile") or ""
    if chosen:
        return chosen
    return f"{effective} (the platform's default)" if effective else "the CA's default"


def domain_rows(domain: dict) -> list[tuple[str, str]]:
    """Every field of a domain as `key  value` rows; fields added to the API later are shown as given."""
    rows = [("name", domain.get("name", "?"))]
    if domain.get("unicode_name") and domain["unicode_name"] != domain.get("name"):
        rows.append(("unicode name", domain["unicode_name"]))
    rows += [
        ("app", domain.get("app", "?")),
        ("status", f"{domain.get('status_label', '?')} ({domain.get('status', '?')})"),
        ("letsencrypt", on_off(domain.get("letsencrypt"))),
    ]
    if "effective_profile" in domain:
        rows.append(("profile", profile_text(domain)))
    if "issuer" in domain:
        rows.append(("issuer", domain["issuer"] or "any, in the platform's order"))
    rows.append(("custom certificate", "uploaded" if domain.get("custom_certificate") else "none"))
    certificate = domain.get("certificate")
    if certificate:
        rows += [
            ("certificate", _source_text(certificate)),
            ("  names", _value(certificate.get("sans"))),
            ("  valid", f"{when(certificate.get('not_before'))} to {when(certificate.get('not_after'))}"),
            ("  sha-256", certificate.get("fingerprint_sha256") or "-"),
        ]
        rows += renewal_rows(certificate)
        if certificate.get("source") == "letsencrypt" and "profile" in certificate:
            rows.append(("  profile", certificate.get("profile") or "the CA's default"))
    else:
        rows.append(("certificate", "none served"))
    for revoked in domain.get("revoked_certificates") or []:
        rows.append(
            (
                "revoked",
                f"serial {revoked.get('serial', '?')} at {when(revoked.get('revoked_at'))} "
                f"({revoked.get('reason') or 'unspecified'})",
            )
        )
    if isinstance(domain.get("dns"), dict):
        rows.append(("dns", _dns_text(domain["dns"])))
    rows += [
        ("next attempt", when(domain.get("next_attempt_at"))),
        ("last error", domain.get("last_error") or "-"),
        ("quota", _quota_text(domain["quota"]) if isinstance(domain.get("quota"), dict) else "-"),
        ("created", when(domain.get("created"))),
    ]
    for key, value in domain.items():
        if key not in KNOWN_FIELDS:
            rows += generic_rows(key, value)
    return rows
