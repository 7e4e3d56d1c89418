#!/usr/bin/env bash
# recspark's two entry points on a fresh machine (Python 3.11+ and Java 17+, nothing else):
#
#   ./run.sh demo [--set key=value ...]   generate the synthetic dataset if absent, then run the
#                                         full pipeline (ALS + WARP) on Spark local[*] with MLflow
#   ./run.sh test [pytest args ...]       run the test suite
#
# Both create/refresh the virtualenv (.venv, or $RECSPARK_VENV) and install the project into it.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "run.sh: $*" >&2; exit 2; }

check_java() {
  local java=java
  [ -n "${JAVA_HOME:-}" ] && java="$JAVA_HOME/bin/java"
  command -v "$java" >/dev/null 2>&1 || die "Java not found: install Java 17+ or set JAVA_HOME (Spark 4 needs Java 17 or 21)."
  local version major
  version=$("$java" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  major=${version%%.*}
  [ "$major" = "1" ] && major=$(echo "$version" | cut -d. -f2)
  [ "${major:-0}" -ge 17 ] 2>/dev/null || die "Java $version found; Spark 4 needs Java 17+ (set JAVA_HOME)."
}

bootstrap() {
  local venv=${RECSPARK_VENV:-.venv} python=${PYTHON:-python3}
  command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3.10+."
  if [ ! -x "$venv/bin/python" ]; then
    echo "run.sh: creating virtualenv $venv"
    "$python" -m venv "$venv"
  fi
  local stamp="$venv/.recspark-installed"
  if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "run.sh: installing recspark and its dependencies into $venv (first run: about a minute)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e '.[test]'
    touch "$stamp"
  fi
  export PATH="$PWD/$venv/bin:$PATH"
  export PYSPARK_PYTHON="$PWD/$venv/bin/python" PYSPARK_DRIVER_PYTHON="$PWD/$venv/bin/python"
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}  # local runs stay on loopback
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    check_java; bootstrap
    exec ./spark-submit.sh --master 'local[*]' --driver-memory 4g jobs/train.py --conf conf/demo.yaml "$@" ;;
  test)
    check_java; bootstrap
    exec python -m pytest "$@" ;;
  *)
    echo "usage: ./run.sh demo [--set key=value ...] | ./run.sh test [pytest args ...]" >&2; exit 2 ;;
esac
