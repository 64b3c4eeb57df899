from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "runtime"
    verbose_name = "Runtime"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from runtime.shutdown import on_worker_spawned

        post_spawn.connect(on_worker_spawned, dispatch_uid="runtime.shutdown")
