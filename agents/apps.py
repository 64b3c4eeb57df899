from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agent research"

    def ready(self) -> None:
        from agents.panels import session_panel
        from agents.summary import READS as SUMMARY_READS
        from agents.summary import session_summary
        from operations import registry
        from runtime.tasks import RUN_OPERATION_TASK

        # Run by the control loop, never enqueued (backend-local): the runtime's task in a thread of `supervise`.
        # A session without a checkpoint is not restarted from the beginning: it would start new children.
        registry.register_executor("agent_research", RUN_OPERATION_TASK, runner="agents.session.SessionRunner",
                                   transient_errors=registry.DATABASE_AND_MEMORY_ERRORS)
        registry.register_detail_panel("agent_research", session_panel)
        registry.register_result_summary("agent_research", session_summary, reads=SUMMARY_READS)
