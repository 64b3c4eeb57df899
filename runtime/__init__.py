"""What executes operations: the django-q2 task and its claim, heartbeat, cancel, checkpoint committer, outbox
and shutdown bridge; the `qcluster` and `supervise` commands; and resume, which joins the checkpoint store and
the core.

Sits above the operations core and the checkpoint store; reaches the domains (training, backtesting, agent
sessions) only through the runners they register in the core's registry.
"""
