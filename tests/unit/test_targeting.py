"""The DNS diagnosis a customer reads: pure, from what the resolvers answered."""

import pytest

from domains.targeting import Lookup, Target, diagnose, records_to_add

TARGET = Target(
    app_hostname="my-app.osc-fr1.example-paas.io",
    cname_target="ingress.osc-fr1.example-paas.io",
    ingress_ipv4=frozenset({"192.0.2.10", "192.0.2.11"}),
    ingress_ipv6=frozenset({"2001:db8::10"}),
    platform_suffixes=("osc-fr1.example-paas.io",),
)


def test_cname_to_the_apps_own_hostname_points_at_the_platform():
    lookup = Lookup("www.example.com", cnames=("my-app.osc-fr1.example-paas.io",), a=("192.0.2.10",))
    assert diagnose(lookup, TARGET).ok


def test_cname_to_the_regions_target_points_at_the_platform_through_its_addresses():
    lookup = Lookup("www.example.com", cnames=("ingress.osc-fr1.example-paas.io",), aaaa=("2001:db8::10",))
    assert diagnose(lookup, TARGET).code == "ok_cname"


@pytest.mark.parametrize(
    ("lookup", "said"),
    [
        (
            Lookup("www.example.com", cnames=("my-app.osc-fr1.example-paas.io",)),
            "www.example.com is a CNAME to my-app.osc-fr1.example-paas.io, which has no address",
        ),
        (
            Lookup("www.example.com", nxdomain=True, cnames=("ingress.osc-fr1.example-paas.io",)),
            "is a CNAME to ingress.osc-fr1.example-paas.io, which does not exist (NXDOMAIN)",
        ),
        (
            Lookup(
                "www.example.com",
                cnames=("my-app.osc-fr1.example-paas.io", "edge.osc-fr1.example-paas.io"),
            ),
            "which has no address (the chain ends at edge.osc-fr1.example-paas.io)",
        ),
    ],
    ids=["app-hostname-nodata", "region-target-nxdomain", "chain-beyond"],
)
def test_a_cname_to_the_platforms_name_without_an_address_is_the_platforms_fault_and_transient(lookup, said):
    diagnosis = diagnose(lookup, TARGET)
    assert (diagnosis.ok, diagnosis.code, diagnosis.transient) == (False, "platform_name_unresolved", True)
    assert said in diagnosis.message
    assert "your record is right" in diagnosis.message
    assert "not counted against the domain" in diagnosis.message


def test_a_cname_elsewhere_to_a_name_that_does_not_exist_says_so_instead_of_nxdomain_for_the_name():
    lookup = Lookup("www.example.com", nxdomain=True, cnames=("gone.example.net",))
    diagnosis = diagnose(lookup, TARGET)
    assert (diagnosis.code, diagnosis.transient) == ("cname_dangling", False)
    assert diagnosis.message.startswith(
        "www.example.com is a CNAME to gone.example.net, which does not exist (NXDOMAIN)."
    )
    assert "www.example.com. CNAME my-app.osc-fr1.example-paas.io." in diagnosis.message


def test_a_records_all_among_the_ingress_addresses_point_at_the_platform():
    assert diagnose(Lookup("example.com", a=("192.0.2.10", "192.0.2.11")), TARGET).code == "ok_addresses"


def test_an_a_record_elsewhere_is_named_with_the_platform_addresses():
    diagnosis = diagnose(Lookup("www.example.com", a=("192.0.2.10", "203.0.113.5")), TARGET)
    assert (diagnosis.ok, diagnosis.code) == (False, "wrong_address")
    assert "A record 203.0.113.5" in diagnosis.message
    assert "192.0.2.10, 192.0.2.11, 2001:db8::10" in diagnosis.message
    assert "www.example.com. CNAME my-app.osc-fr1.example-paas.io." in diagnosis.message


def test_a_stray_aaaa_beside_a_correct_a_fails_and_says_to_remove_it():
    diagnosis = diagnose(Lookup("www.example.com", a=("192.0.2.10",), aaaa=("2001:db8::99",)), TARGET)
    assert diagnosis.code == "stray_aaaa"
    assert "AAAA record 2001:db8::99" in diagnosis.message
    assert "remove the AAAA record" in diagnosis.message


def test_a_cname_to_another_app_of_the_platform_fails_naming_it():
    lookup = Lookup("www.example.com", cnames=("other-app.osc-fr1.example-paas.io",), a=("192.0.2.10",))
    diagnosis = diagnose(lookup, TARGET)
    assert diagnosis.code == "cname_other_app"
    assert "other-app.osc-fr1.example-paas.io, which is another app" in diagnosis.message


def test_nxdomain_says_the_name_does_not_exist_and_what_to_add():
    diagnosis = diagnose(Lookup("www.example.com", nxdomain=True), TARGET)
    assert diagnosis.code == "nxdomain"
    assert diagnosis.message.startswith("www.example.com does not exist in DNS (NXDOMAIN).")


def test_no_records_at_an_apex_asks_for_a_records_not_a_cname():
    diagnosis = diagnose(Lookup("example.com"), TARGET)
    assert diagnosis.code == "no_records"
    assert "A CNAME is not allowed at a zone apex" in diagnosis.message
    assert "example.com. A 192.0.2.10" in diagnosis.message


@pytest.mark.parametrize("error", ["SERVFAIL", "timeout"])
def test_a_resolver_problem_is_transient_and_not_the_customers(error):
    diagnosis = diagnose(Lookup("www.example.com", error=error), TARGET)
    assert (diagnosis.ok, diagnosis.transient) == (False, True)
    assert f"({error})" in diagnosis.message


def test_records_to_add_are_a_cname_for_a_subdomain_and_addresses_for_an_apex():
    assert records_to_add("shop.example.co.uk", TARGET) == [
        "shop.example.co.uk. CNAME my-app.osc-fr1.example-paas.io."
    ]
    assert records_to_add("example.co.uk", TARGET) == [
        "example.co.uk. A 192.0.2.10",
        "example.co.uk. A 192.0.2.11",
        "example.co.uk. AAAA 2001:db8::10",
    ]


def test_only_a_cname_to_the_apps_own_hostname_says_which_app_the_name_is_for():
    from domains.targeting import Lookup, Target, diagnose

    target = Target(
        app_hostname="my-app.osc-fr1.example-paas.io",
        cname_target="ingress.osc-fr1.example-paas.io",
        ingress_ipv4=frozenset({"192.0.2.10"}),
        ingress_ipv6=frozenset(),
    )
    own = diagnose(
        Lookup("www.example.com", cnames=("my-app.osc-fr1.example-paas.io",), a=("192.0.2.10",)), target
    )
    shared = diagnose(
        Lookup("www.example.com", cnames=("ingress.osc-fr1.example-paas.io",), a=("192.0.2.10",)), target
    )
    address = diagnose(Lookup("www.example.com", a=("192.0.2.10",)), target)
    assert (own.ok, own.code) == (True, "ok_app_cname")
    assert (shared.ok, shared.code) == (True, "ok_cname")
    assert (address.ok, address.code) == (True, "ok_addresses")
