from django.apps import AppConfig


class BacktestingConfig(AppConfig):
    name = "backtesting"
    verbose_name = "Backtesting"

    def ready(self) -> None:
        from django.conf import settings

        from backtesting.maintenance import spool_sweep
        from backtesting.panels import READS as PANEL_READS
        from backtesting.panels import backtest_panel
        from backtesting.spool import results_remove
        from backtesting.summary import READS as SUMMARY_READS
        from backtesting.summary import backtest_summary
        from backtesting.trades import trades_context
        from operations import registry
        from runtime.tasks import RUN_OPERATION_TASK

        registry.register_executor(
            "backtesting", RUN_OPERATION_TASK, runner="backtesting.runner.BacktestRunner",
            transient_errors=registry.DATABASE_AND_MEMORY_ERRORS, restart_from_scratch=lambda: True,
        )
        registry.register_artifact_remover("backtest results", results_remove)
        registry.register_detail_panel("backtesting", backtest_panel, reads=PANEL_READS)
        registry.register_result_page("backtesting", "trades", title="Trades", template="admin/backtesting/trades.html",
                                      context=trades_context)
        registry.register_result_summary("backtesting", backtest_summary, reads=SUMMARY_READS)
        registry.register_maintenance(
            "backtest spool sweep", lambda: settings.CHECKPOINT_CLEANUP_INTERVAL_HOURS * 3600, spool_sweep
        )
