from django.apps import AppConfig


class WebuiConfig(AppConfig):
    name = "webui"

    def ready(self) -> None:
        from webui import login_limits, signals

        signals.connect()
        login_limits.connect()
