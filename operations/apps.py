from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from operations.runtime.shutdown import on_worker_spawned

        post_spawn.connect(on_worker_spawned, dispatch_uid="operations.runtime.shutdown")
