from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from operations import registry

        registry.register_executor("training", runner="training.runner.TrainingRunner")
