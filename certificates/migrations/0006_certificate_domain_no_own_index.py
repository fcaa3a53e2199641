# The foreign key's own index is dropped by name: Django's AlterField(db_index=False) drops every
# index on domain_id alone, which would take certificate_one_custom_per_domain with it.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('certificates', '0005_renewal_and_custom'),
        ('domains', '0003_quota_fields'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='certificate',
                    name='domain',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='certificates', to='domains.domain'),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS certificates_certificate_domain_id_30051f1e",
                    "CREATE INDEX IF NOT EXISTS certificates_certificate_domain_id_30051f1e "
                    "ON certificates_certificate (domain_id)",
                ),
            ],
        ),
    ]
