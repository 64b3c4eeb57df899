from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        import torch
        from django.conf import settings

        from operations import registry
        from runtime.tasks import RUN_OPERATION_TASK
        from training.artifacts import models_remove
        from training.panels import READS as PANEL_READS
        from training.panels import training_panel
        from training.summary import READS as SUMMARY_READS
        from training.summary import training_checkpoint_summary, training_summary

        registry.register_executor(
            "training", RUN_OPERATION_TASK, runner="training.runner.TrainingRunner",
            transient_errors=(*registry.DATABASE_AND_MEMORY_ERRORS, torch.OutOfMemoryError),
            restart_from_scratch=lambda: settings.TRAINING_RESTART_FROM_SCRATCH,
        )
        registry.register_artifact_remover("models", models_remove)
        registry.register_detail_panel("training", training_panel, reads=PANEL_READS)
        registry.register_result_summary("training", training_summary, reads=SUMMARY_READS)
        registry.register_checkpoint_summary("training", training_checkpoint_summary)
