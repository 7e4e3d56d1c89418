#!/usr/bin/env bash
# A real multi-process Spark standalone cluster on this machine: one Master and
# (by default) two Workers, loopback only, for testing recspark jobs the way they
# run on a remote cluster (separate executor JVMs, the package shipped by
# spark-submit.sh, executor loss and recomputation).
#
#   scripts/local-cluster.sh start           start the daemons (idempotent), wait until every worker
#                                            is ALIVE, print the master URL (spark://127.0.0.1:<port>)
#   scripts/local-cluster.sh stop            stop the daemons started here (pid files), wait for them
#                                            to exit; safe to run twice
#   scripts/local-cluster.sh status          print the master URL, the alive workers and the running
#                                            applications; exit 1 when the cluster is not running
#   scripts/local-cluster.sh url             print just the master URL (exit 1 when not running)
#   scripts/local-cluster.sh kill-executor [N]
#                                            SIGKILL one executor JVM (CoarseGrainedExecutorBackend)
#                                            launched by this cluster's worker N (default: the first
#                                            worker that has one); only children of this cluster's
#                                            worker processes are ever touched. Prints
#                                            "killed executor <id> of <app> (pid <pid>, worker <N>)";
#                                            exit 1 when no executor is running.
#
# Submit to it with:  SPARK_LOCAL_IP=127.0.0.1 ./spark-submit.sh --master "$(scripts/local-cluster.sh url)" \
#                         --conf spark.executor.cores=1 --conf spark.executor.memory=1g jobs/train.py ...
#
# Environment (defaults in brackets). Ports and sizes are read by `start` and
# recorded in $RECSPARK_CLUSTER_DIR/cluster.env, which the other subcommands
# (and `start` on a running cluster) read until `stop` removes it, so only
# RECSPARK_CLUSTER_DIR has to match between calls.
#   RECSPARK_CLUSTER_DIR          pid files, logs (one per daemon), worker dirs [<repo>/build/local-cluster]
#   RECSPARK_MASTER_PORT          master RPC port [7177]
#   RECSPARK_MASTER_WEBUI_PORT    master web UI port (its /json/ is polled) [8180]
#   RECSPARK_WORKER_WEBUI_PORT    first worker's web UI port; worker N uses this + N - 1 [8181]
#   RECSPARK_WORKER_PORT          first worker's RPC port, worker N uses this + N - 1; 0: random [0]
#   RECSPARK_WORKERS              number of workers [2]
#   RECSPARK_WORKER_CORES         cores per worker [1]
#   RECSPARK_WORKER_MEMORY        memory per worker for its executors [2g]
#   RECSPARK_CLUSTER_TIMEOUT      seconds `start` waits for the workers to register [120]
#   SPARK_HOME                    Spark to run [the installed pyspark's]
#
# Executors' Python: not a worker setting. PySpark sends the driver's
# PYSPARK_PYTHON (or spark.pyspark.python) with every Python function, and the
# executors start that interpreter. spark-submit.sh sets it to <repo>/.venv/bin/python,
# an absolute path that is valid on every "node" here (one machine).
#
# Everything binds to 127.0.0.1 (SPARK_LOCAL_IP, --host); daemons never retry
# other ports (spark.port.maxRetries=0), so a busy port is an error naming it.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
prog="scripts/local-cluster.sh"
dir="${RECSPARK_CLUSTER_DIR:-$here/build/local-cluster}"
env_file="$dir/cluster.env"

die() { echo "$prog: $*" >&2; exit 1; }

python=${PYTHON:-python3}
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"

# The settings: recorded by `start`, reused by every later call on the same folder.
load_settings() {
  if [ -f "$env_file" ]; then
    # shellcheck disable=SC1090
    . "$env_file"
  fi
  master_port=${master_port:-${RECSPARK_MASTER_PORT:-7177}}
  master_webui_port=${master_webui_port:-${RECSPARK_MASTER_WEBUI_PORT:-8180}}
  worker_webui_port=${worker_webui_port:-${RECSPARK_WORKER_WEBUI_PORT:-8181}}
  worker_port=${worker_port:-${RECSPARK_WORKER_PORT:-0}}
  n_workers=${n_workers:-${RECSPARK_WORKERS:-2}}
  worker_cores=${worker_cores:-${RECSPARK_WORKER_CORES:-1}}
  worker_memory=${worker_memory:-${RECSPARK_WORKER_MEMORY:-2g}}
  master_url="spark://127.0.0.1:$master_port"
  json_url="http://127.0.0.1:$master_webui_port/json/"
}

find_spark_class() {
  if [ -z "${SPARK_HOME:-}" ]; then
    SPARK_HOME=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null) \
      || die "pyspark is not importable by $python; set SPARK_HOME or run ./run.sh test once"
    export SPARK_HOME
  fi
  spark_class="$SPARK_HOME/bin/spark-class"
  [ -x "$spark_class" ] || die "$spark_class not found or not executable (SPARK_HOME=$SPARK_HOME)"
}

# pid_of NAME CLASS: the pid in NAME's pid file if that process is alive and still runs CLASS.
pid_of() {
  local file="$dir/$1.pid" pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  ps -o args= -p "$pid" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

master_pid() { pid_of master org.apache.spark.deploy.master.Master; }
worker_pid() { pid_of "worker-$1" org.apache.spark.deploy.worker.Worker; }

port_free() {
  "$python" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# The master's /json/ summary: "<alive workers> <apps>" lines, or failure when it does not answer.
master_json() {
  "$python" - "$json_url" "${1:-summary}" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        state = json.load(r)
except Exception:
    sys.exit(1)
alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
if sys.argv[2] == "alive":
    print(len(alive))
else:
    print(f"master: {state.get('url')} ({state.get('status')}), {len(alive)} alive worker(s), "
          f"cores {state.get('coresused')}/{state.get('cores')} used")
    for w in alive:
        print(f"  worker {w['id']}: {w['cores']} core(s), {w['memory']} MB, "
              f"{w['coresused']} core(s) in use, web UI {w.get('webuiaddress')}")
    for a in state.get("activeapps", []):
        print(f"  app {a['id']} ({a['name']}): {a.get('state')}, {a.get('cores')} core(s)")
EOF
}

# launch NAME CLASS ARGS...: one daemon, its own log, its pid file.
launch() {
  local name=$1; shift
  local log="$dir/$name.log"
  echo "starting $name (log: $log)"
  nohup "$spark_class" "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

tail_logs() {
  local f
  for f in "$dir"/master.log "$dir"/worker-*.log; do
    [ -f "$f" ] || continue
    echo "---- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
}

cmd_start() {
  mkdir -p "$dir"
  load_settings
  find_spark_class
  local alive_all=1 alive_any=0 i
  if master_pid >/dev/null; then alive_any=1; else alive_all=0; fi
  for ((i = 1; i <= n_workers; i++)); do
    if worker_pid "$i" >/dev/null; then alive_any=1; else alive_all=0; fi
  done
  if [ "$alive_any" = 0 ] && [ -f "$env_file" ]; then
    # Nothing of ours is running: forget the last run's settings, take the environment's.
    rm -f "$env_file"
    unset master_port master_webui_port worker_webui_port worker_port n_workers worker_cores worker_memory
    load_settings
  fi
  if [ "$alive_all" = 1 ] && [ "$(master_json alive 2>/dev/null || echo 0)" -ge "$n_workers" ]; then
    echo "already running: $master_url"
    return 0
  fi

  cat >"$env_file" <<EOF
master_port=$master_port
master_webui_port=$master_webui_port
worker_webui_port=$worker_webui_port
worker_port=$worker_port
n_workers=$n_workers
worker_cores=$worker_cores
worker_memory=$worker_memory
EOF
  export SPARK_LOCAL_IP=127.0.0.1
  export SPARK_LOCAL_HOSTNAME=127.0.0.1
  # No retries on other ports; no REST submission server (it would bind port 6066).
  export SPARK_MASTER_OPTS="${SPARK_MASTER_OPTS:-} -Dspark.port.maxRetries=0 -Dspark.master.rest.enabled=false"
  export SPARK_WORKER_OPTS="${SPARK_WORKER_OPTS:-} -Dspark.port.maxRetries=0"
  export SPARK_DAEMON_MEMORY=${SPARK_DAEMON_MEMORY:-512m}

  if ! master_pid >/dev/null; then
    local p
    for p in "$master_port" "$master_webui_port"; do
      port_free "$p" || die "port $p on 127.0.0.1 is in use: set RECSPARK_MASTER_PORT / RECSPARK_MASTER_WEBUI_PORT"
    done
    launch master org.apache.spark.deploy.master.Master \
      --host 127.0.0.1 --port "$master_port" --webui-port "$master_webui_port"
  fi
  for ((i = 1; i <= n_workers; i++)); do
    worker_pid "$i" >/dev/null && continue
    local ui=$((worker_webui_port + i - 1)) rpc=0
    [ "$worker_port" != 0 ] && rpc=$((worker_port + i - 1))
    port_free "$ui" || die "port $ui on 127.0.0.1 is in use: set RECSPARK_WORKER_WEBUI_PORT"
    if [ "$rpc" != 0 ]; then port_free "$rpc" || die "port $rpc on 127.0.0.1 is in use: set RECSPARK_WORKER_PORT"; fi
    mkdir -p "$dir/worker-$i"
    launch "worker-$i" org.apache.spark.deploy.worker.Worker \
      --host 127.0.0.1 --port "$rpc" --webui-port "$ui" \
      --cores "$worker_cores" --memory "$worker_memory" --work-dir "$dir/worker-$i" "$master_url"
  done

  local timeout=${RECSPARK_CLUSTER_TIMEOUT:-120} waited=0 alive
  while :; do
    alive=$(master_json alive 2>/dev/null || echo 0)
    [ "$alive" -ge "$n_workers" ] && break
    master_pid >/dev/null || { tail_logs; die "the master exited during start-up; see $dir/master.log"; }
    for ((i = 1; i <= n_workers; i++)); do
      worker_pid "$i" >/dev/null || { tail_logs; die "worker $i exited during start-up; see $dir/worker-$i.log"; }
    done
    if [ "$waited" -ge "$timeout" ]; then
      tail_logs
      die "timed out after ${timeout}s waiting for $n_workers ALIVE worker(s) at $json_url ($alive alive); logs: $dir/*.log (daemons left running for inspection: run '$prog stop')"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "cluster up: $n_workers worker(s) ALIVE (${worker_cores} core(s), $worker_memory each), web UI http://127.0.0.1:$master_webui_port"
  echo "$master_url"
}

# executors_of PID: pids of CoarseGrainedExecutorBackend JVMs whose parent is PID.
executors_of() {
  ps -e -o pid=,ppid=,args= | awk -v parent="$1" '$2 == parent && /org\.apache\.spark\.executor\.CoarseGrainedExecutorBackend/ {print $1}'
}

# stop_pid PID: TERM, wait up to 20 s, then KILL.
stop_pid() {
  local pid=$1 n
  kill "$pid" 2>/dev/null || return 0
  for ((n = 0; n < 100; n++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  echo "pid $pid did not exit after SIGTERM; sending SIGKILL" >&2
  kill -9 "$pid" 2>/dev/null || true
  for ((n = 0; n < 25; n++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
}

cmd_stop() {
  load_settings
  local stopped=0 i pid executors
  for ((i = 1; i <= n_workers; i++)); do
    if pid=$(worker_pid "$i"); then
      executors=$(executors_of "$pid")
      echo "stopping worker-$i (pid $pid)"
      stop_pid "$pid"
      for pid in $executors; do stop_pid "$pid"; done  # orphaned executors, if the worker could not stop them
      stopped=1
    fi
    rm -f "$dir/worker-$i.pid"
  done
  if pid=$(master_pid); then
    echo "stopping master (pid $pid)"
    stop_pid "$pid"
    stopped=1
  fi
  rm -f "$dir/master.pid" "$env_file"
  [ "$stopped" = 1 ] && echo "stopped: $master_url" || echo "not running (nothing to stop in $dir)"
}

cmd_status() {
  load_settings
  local pid i down=0
  if pid=$(master_pid); then echo "master pid $pid: $master_url"; else echo "master: not running"; down=1; fi
  for ((i = 1; i <= n_workers; i++)); do
    if pid=$(worker_pid "$i"); then echo "worker-$i pid $pid"; else echo "worker-$i: not running"; down=1; fi
  done
  if [ "$down" = 0 ] && master_json summary; then
    echo "$master_url"
    return 0
  fi
  [ "$down" = 0 ] && echo "the master does not answer at $json_url"
  return 1
}

cmd_url() {
  load_settings
  master_pid >/dev/null || die "not running (no live master in $dir)"
  echo "$master_url"
}

cmd_kill_executor() {
  load_settings
  local want=${1:-} i pid exe args
  [ -z "$want" ] || [[ "$want" =~ ^[0-9]+$ ]] || die "kill-executor: worker number expected, got '$want'"
  for ((i = 1; i <= n_workers; i++)); do
    [ -n "$want" ] && [ "$i" != "$want" ] && continue
    pid=$(worker_pid "$i") || continue
    for exe in $(executors_of "$pid"); do
      args=$(ps -o args= -p "$exe" 2>/dev/null) || continue
      kill -9 "$exe" 2>/dev/null || continue
      local id app
      id=$(sed -n 's/.*--executor-id \([^ ]*\).*/\1/p' <<<"$args")
      app=$(sed -n 's/.*--app-id \([^ ]*\).*/\1/p' <<<"$args")
      echo "killed executor ${id:-?} of ${app:-?} (pid $exe, worker $i)"
      return 0
    done
  done
  die "no running executor found${want:+ on worker $want} of the cluster in $dir"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url ;;
  kill-executor) shift; cmd_kill_executor "${1:-}" ;;
  *) echo "usage: $prog start|stop|status|url|kill-executor [worker]  (see the header of $0)" >&2; exit 2 ;;
esac
