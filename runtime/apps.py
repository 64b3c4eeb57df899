from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "runtime"
    verbose_name = "Runtime"

    def ready(self) -> None:
        from django_q.signals import post_execute, post_spawn

        from runtime.results import on_result_saved
        from runtime.shutdown import on_worker_spawned

        post_spawn.connect(on_worker_spawned, dispatch_uid="runtime.shutdown")
        post_execute.connect(on_result_saved, dispatch_uid="runtime.results")
