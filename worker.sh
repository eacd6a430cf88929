#!/usr/bin/env bash
# Start N RQ workers (argument, or WORKERS, default 2) on the queues in priority order,
# with the scheduler. SIGTERM or Ctrl-C lets each running job finish first.
#   ./worker.sh        ./worker.sh 4        WORKERS=3 ./worker.sh        WORKER_MODE=fast ./worker.sh
# WORKER_MODE: fork (default) forks a fresh process for every job; fast runs jobs one after
# another in one long-lived work horse per worker, for short jobs (README, Workers).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

count="${1:-${WORKERS:-2}}"
if ! [[ "$count" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [number of workers]" >&2
  exit 2
fi

# The project's virtualenv when there is one (make run, a terminal); plain PATH in Docker.
if [[ -x "$here/.venv/bin/python" ]]; then
  python="$here/.venv/bin/python"
else
  python="python"
fi

# Same config as the web app: .env, REDIS_URL and QUEUES; the heartbeat and maintenance
# intervals that fail a dead worker's job in seconds come from the app's config through
# app.worker (JOB_MONITORING_INTERVAL, MAINTENANCE_INTERVAL). app.work is `rq worker` with
# these settings and the scheduler, in less memory (README, Workers).
args=(-m app.work)

pids=()
stopping=0
stop() {
  stopping=1
  # The first signal lets running jobs finish; a second (a second or more later) makes RQ
  # stop them at once.
  if (( ${#pids[@]} )); then kill -TERM "${pids[@]}" 2>/dev/null || true; fi
}
trap stop INT TERM

# Each worker in its own process group: a Ctrl-C in the terminal, or a supervisor signalling
# our group, reaches only this script, which passes it on. RQ's work horse dies on a direct
# SIGTERM, so a signal to the whole group would kill the running job.
set -m
for _ in $(seq "$count"); do
  "$python" "${args[@]}" &
  pids+=("$!")
done

status=0
for pid in "${pids[@]}"; do
  rc=0
  wait "$pid" || rc=$?
  # wait returns early when a signal arrives; wait again until this worker has exited.
  while kill -0 "$pid" 2>/dev/null; do
    rc=0
    wait "$pid" || rc=$?
  done
  # 143 (SIGTERM) is a clean stop for a worker we told to stop before it set up its handlers.
  if [[ "$rc" != 0 && ! ( "$stopping" == 1 && "$rc" == 143 ) ]]; then status="$rc"; fi
done
exit "$status"
