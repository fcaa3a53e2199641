import pytest

from tests.factories import AppFactory, RegionFactory


@pytest.fixture(autouse=True)
def fresh_quota(quota_redis):
    """Every integration test issues under example.com: each starts with that bucket rebuilt from
    its own (empty) database rather than the suite's earlier certificates."""
    return quota_redis


@pytest.fixture
def app():
    """An app in a region whose ingress is this machine, where Pebble validates HTTP-01."""
    region = RegionFactory(
        name="local",
        domain_suffix="local.example-paas.io",
        cname_target="ingress.local.example-paas.io",
        ingress_ipv4=["127.0.0.1"],
        ingress_ipv6=[],
    )
    return AppFactory(name="my-app", region=region)
