import pytest


@pytest.fixture(autouse=True)
def fresh_quota(quota_redis):
    """Every integration test issues under example.com: each starts with that bucket rebuilt from
    its own (empty) database rather than the suite's earlier certificates."""
    return quota_redis
