from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "delivery"
    verbose_name = "Delivery"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from sendmsg import worker_shutdown

        # Each delivery worker process listens for its cluster's graceful stop.
        post_spawn.connect(worker_shutdown.listen, dispatch_uid="sendmsg.worker_shutdown")
