from django.apps import AppConfig


class CheckpointsConfig(AppConfig):
    name = "checkpoints"
    verbose_name = "Checkpoints"

    def ready(self) -> None:
        from django.conf import settings

        from checkpoints.services import checkpoint_maintenance, checkpoints_remove, operation_has_checkpoint
        from operations import registry

        registry.register_checkpoint_probe(operation_has_checkpoint)
        registry.register_artifact_remover("checkpoints", checkpoints_remove)
        registry.register_maintenance(
            "checkpoint cleanup",
            lambda: settings.CHECKPOINT_CLEANUP_INTERVAL_HOURS * 3600,
            checkpoint_maintenance,
        )
