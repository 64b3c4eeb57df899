from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from operations import registry
        from operations.services.retention import purge_by_setting

        registry.register_maintenance("operations purge", lambda: 24 * 3600, purge_by_setting)
