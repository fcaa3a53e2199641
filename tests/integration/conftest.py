import pytest

from tests.integration.cli_runner import Cli


@pytest.fixture(autouse=True)
def fresh_quota(quota_redis):
    """Every integration test issues under example.com: each starts with that bucket rebuilt from
    its own (empty) database rather than the suite's earlier certificates."""
    return quota_redis


@pytest.fixture
def cli(web_server, app) -> Cli:
    """The CLI with a token of the app's owner."""
    from api.tokens import create_token

    _, token = create_token(app.owner, "cli")
    return Cli(app.name, token)
