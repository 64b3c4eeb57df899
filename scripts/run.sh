#!/usr/bin/env bash
# Web, workers and control loop together. Ctrl+C (or SIGTERM, or any one of them exiting)
# stops all three: each gets one SIGTERM and is waited for, so each shuts down its own way.
set -u
PY=${PY:-.venv/bin/python}
PORT=${PORT:-8000}

# The static files the web serves (WhiteNoise): hashed, compressed, cached for a year. Quick when nothing changed.
"$PY" manage.py collectstatic --noinput --verbosity 0 || exit 1

pids=()
stop_all() {
  trap '' INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

"$PY" manage.py runserver "127.0.0.1:$PORT" --noreload & pids+=($!)
"$PY" manage.py qcluster & pids+=($!)
"$PY" manage.py supervise & pids+=($!)

wait -n
stop_all
