from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webui", "0010_template_sources")]

    operations = [
        migrations.AddField(model_name="container", name="paused", field=models.BooleanField(default=False)),
    ]
