from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from operations import registry
        from runtime.tasks import RUN_OPERATION_TASK
        from training.panels import training_panel

        registry.register_executor("training", RUN_OPERATION_TASK, runner="training.runner.TrainingRunner")
        registry.register_detail_panel("training", training_panel)
