"""A router token revoked, deleted or given other regions is announced at commit on the channel
certwright_router_tokens (payload: the token's id), so that the feed service cuts that router's
open long-poll at once instead of when its wait ends (api/feed_wakeups.py)."""

from django.db import migrations

FORWARD = """
CREATE FUNCTION certwright_router_token_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('certwright_router_tokens', OLD.id::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_apitoken_changed_notify
AFTER UPDATE OF revoked, regions ON api_apitoken
FOR EACH ROW
WHEN (OLD.revoked IS DISTINCT FROM NEW.revoked OR OLD.regions IS DISTINCT FROM NEW.regions)
EXECUTE FUNCTION certwright_router_token_changed();

CREATE TRIGGER api_apitoken_deleted_notify
AFTER DELETE ON api_apitoken
FOR EACH ROW
EXECUTE FUNCTION certwright_router_token_changed();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS api_apitoken_deleted_notify ON api_apitoken;
DROP TRIGGER IF EXISTS api_apitoken_changed_notify ON api_apitoken;
DROP FUNCTION IF EXISTS certwright_router_token_changed();
"""


class Migration(migrations.Migration):
    dependencies = [("api", "0003_router_token_regions")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
