"""The fan-out's queue becomes a narrow table of its own (domains.EventBacklog) instead of a flag
on the event: marking a fanned-out event `dispatched` rewrote the whole event row with all its index
entries (the flag was in the partial index's predicate, so the UPDATE was never HOT), the largest
cost of the fan-out per event. A statement-level trigger on domains_event writes each new event's
row in the transaction of its insert, whatever statement inserts it; the events not dispatched yet
are copied over first. Reversed, events still in the backlog are the ones not dispatched."""

from django.db import migrations, models

_TRIGGER = """
CREATE FUNCTION domains_event_to_backlog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO domains_eventbacklog (seq, event_id, app_id, domain_id, type)
    SELECT seq, id, app_id, domain_id, type FROM inserted;
    RETURN NULL;
END
$$;
CREATE TRIGGER event_backlog AFTER INSERT ON domains_event
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION domains_event_to_backlog();
"""

_NO_TRIGGER = """
DROP TRIGGER IF EXISTS event_backlog ON domains_event;
DROP FUNCTION IF EXISTS domains_event_to_backlog();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("domains", "0012_overview_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventBacklog",
            fields=[
                ("seq", models.BigIntegerField(primary_key=True, serialize=False)),
                ("event_id", models.UUIDField()),
                ("app_id", models.BigIntegerField()),
                ("domain_id", models.BigIntegerField()),
                ("type", models.CharField(max_length=40)),
            ],
            options={
                "verbose_name_plural": "event backlog",
            },
        ),
        # The trigger's lock on domains_event (taken here, held to the migration's commit) keeps
        # writers out until the copy below is done: no event is missed or copied twice.
        migrations.RunSQL(_TRIGGER, reverse_sql=_NO_TRIGGER),
        migrations.RunSQL(
            """
            INSERT INTO domains_eventbacklog (seq, event_id, app_id, domain_id, type)
            SELECT seq, id, app_id, domain_id, type FROM domains_event WHERE NOT dispatched
            """,
            reverse_sql="""
            UPDATE domains_event e SET dispatched = NOT EXISTS (
                SELECT 1 FROM domains_eventbacklog b WHERE b.seq = e.seq
            )
            """,
        ),
        migrations.RemoveIndex(
            model_name="event",
            name="event_undispatched_idx",
        ),
        migrations.RemoveField(
            model_name="event",
            name="dispatched",
        ),
    ]
