"""Executing operations on django-q2 workers: claim, heartbeat, cancel, checkpoint on the way out.

Sits above the operations core and the checkpoint store; reaches the domains
(training, backtesting) only through the runners they register.
"""
