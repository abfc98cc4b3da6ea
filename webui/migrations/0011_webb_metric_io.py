from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webui", "0010_template_sources")]

    operations = [
        migrations.AddField(model_name="metricsample", name="io_read", field=models.FloatField(default=0)),
        migrations.AddField(model_name="metricsample", name="io_write", field=models.FloatField(default=0)),
    ]
