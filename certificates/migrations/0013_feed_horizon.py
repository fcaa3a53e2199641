"""The feed's prune horizon: the last routers' change feed row deleted by retention."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("certificates", "0012_revocation_queue")]

    operations = [
        migrations.CreateModel(
            name="FeedHorizon",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("pruned_through", models.BigIntegerField(default=0)),
            ],
        ),
    ]
