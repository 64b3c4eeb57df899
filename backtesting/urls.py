from django.urls import path

from backtesting.api import BacktestCreateView

urlpatterns = [path("backtests/", BacktestCreateView.as_view(), name="backtest-create")]
