from django.apps import AppConfig


class SendmsgConfig(AppConfig):
    name = "sendmsg"
    verbose_name = "sendmsg"

    def ready(self) -> None:
        from sendmsg import checks  # noqa: F401  registers the system checks
