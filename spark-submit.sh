#!/usr/bin/env bash
# Submit a recspark job, locally or to a cluster:
#
#   ./spark-submit.sh [spark-submit options ...] jobs/<job>.py [job arguments ...]
#   ./spark-submit.sh --master spark://host:7077 --conf spark.executor.memory=8g \
#       jobs/train.py --conf conf/demo.yaml --set als.rank=64
#
# It finds spark-submit ($SPARK_HOME/bin, else the one that ships with the installed
# pyspark), zips the recspark package and ships it with --py-files (merged with any
# --py-files you pass), ships the job's --conf YAML with --files, and passes every
# other option through. Executors also need recspark's Python dependencies (numpy,
# scipy, pandas, pyarrow): either install them on the workers, or pack a virtualenv
# (e.g. `venv-pack -o env.tar.gz`) and set RECSPARK_PYENV_ARCHIVE=env.tar.gz — it is
# shipped with --archives and used as the executors' Python.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python=${PYSPARK_DRIVER_PYTHON:-${PYTHON:-python3}}
[ -x "$here/.venv/bin/python" ] && [ -z "${PYSPARK_DRIVER_PYTHON:-}" ] && python="$here/.venv/bin/python"

if [ -n "${SPARK_HOME:-}" ]; then
  submit="$SPARK_HOME/bin/spark-submit"
else
  pyspark_dir=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null) \
    || { echo "spark-submit.sh: pyspark is not importable by $python; set SPARK_HOME or run ./run.sh demo once" >&2; exit 2; }
  submit="$pyspark_dir/bin/spark-submit"
  export SPARK_HOME="$pyspark_dir"
fi

# Split: spark-submit options | the job file | the job's own arguments.
opts=() job="" job_args=() py_files="" files=""
while [ $# -gt 0 ]; do
  case "$1" in
    --py-files) py_files="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    *.py) job="$1"; shift; job_args=("$@"); break ;;
    *) opts+=("$1"); shift ;;
  esac
done
[ -n "$job" ] || { echo "usage: spark-submit.sh [spark-submit options] jobs/<job>.py [job args]" >&2; exit 2; }

# The package, zipped fresh so executors run exactly the driver's code, under a name made of its
# content's hash: a running driver imports lazily from its zip *by path*, so a later submission
# with changed code must never replace that file (even by an atomic rename). Identical code reuses
# the same zip; old ones stay in build/ (small; delete them when no job runs).
mkdir -p "$here/build"
zip=$(cd "$here" && "$python" -c '
import hashlib, io, os, pathlib, tempfile, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    for p in sorted(pathlib.Path("recspark").rglob("*.py")):
        z.writestr(zipfile.ZipInfo(p.as_posix(), date_time=(1980, 1, 1, 0, 0, 0)), p.read_bytes(),
                   zipfile.ZIP_DEFLATED)  # fixed timestamps: the bytes, and so the name, depend on content only
data = buf.getvalue()
path = pathlib.Path("build") / f"recspark-{hashlib.sha256(data).hexdigest()[:16]}.zip"
if not path.exists():
    fd, tmp = tempfile.mkstemp(dir="build", prefix=".recspark.zip.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)  # never half-written
print(path.resolve())
')
py_files="${py_files:+$py_files,}$zip"

# Ship the job's YAML config, so cluster-mode drivers can read it too.
for ((i = 0; i < ${#job_args[@]}; i++)); do
  if [ "${job_args[$i]}" = "--conf" ] && [ $((i + 1)) -lt ${#job_args[@]} ]; then
    files="${files:+$files,}${job_args[$((i + 1))]}"
  fi
done

if [ -n "${RECSPARK_PYENV_ARCHIVE:-}" ]; then
  opts+=(--archives "$RECSPARK_PYENV_ARCHIVE#environment" --conf spark.pyspark.python=./environment/bin/python)
else
  export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$python}
fi
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$python}

# A local master (spark-submit's default) binds to loopback, as ./run.sh does: no firewall prompt,
# no "hostname resolves to a loopback address" warning, nothing listening on the network.
master="local[*]"
for ((i = 0; i < ${#opts[@]}; i++)); do
  case "${opts[$i]}" in
    --master) master="${opts[$((i + 1))]:-}" ;;
    --master=*) master="${opts[$i]#--master=}" ;;
  esac
done
case "$master" in
  local*) export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1} ;;
esac

# Validate the job's config in plain Python first: a bad --conf/--set fails in seconds (exit 2),
# not after the JVM has started. RECSPARK_SKIP_CONFIG_CHECK=1 skips it.
if [ -z "${RECSPARK_SKIP_CONFIG_CHECK:-}" ]; then
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" "$job" "${job_args[@]}" --check-config || exit $?
fi

# Spark's JVM logging (conf/log4j2.properties): warnings on the console without start-up noise or
# failed tasks' Java traces (recspark reports those in one paragraph); everything in a log file of
# the run's own. Not when you pass your own driver Java options, deploy in cluster mode (the driver
# runs elsewhere), or set RECSPARK_SPARK_LOG=spark for Spark's defaults.
own_java_opts=""
for ((i = 0; i < ${#opts[@]}; i++)); do
  case "${opts[$i]}" in
    --driver-java-options|--driver-java-options=*|spark.driver.extraJavaOptions=*) own_java_opts=1 ;;
    --deploy-mode) [ "${opts[$((i + 1))]:-}" = "cluster" ] && own_java_opts=1 ;;
    --deploy-mode=cluster) own_java_opts=1 ;;
  esac
done
if [ -z "$own_java_opts" ] && [ "${RECSPARK_SPARK_LOG:-}" != "spark" ]; then
  spark_log=$(mktemp "${TMPDIR:-/tmp}/recspark-spark-XXXXXX.log")
  echo "spark-submit.sh: Spark's log: $spark_log" >&2
  opts+=(--driver-java-options "-Dlog4j2.configurationFile=file:$here/conf/log4j2.properties -Drecspark.spark.log=$spark_log")
fi

# add_java_opts driver|executor "-Dx=1 ...": appended to the Java options already on the command line (yours,
# or the log4j ones above: spark-submit keeps only one value), else passed as a new option.
add_java_opts() {
  local key="spark.$1.extraJavaOptions" i
  if [ "$1" = driver ]; then  # --driver-java-options wins over --conf spark.driver.extraJavaOptions
    for ((i = 0; i < ${#opts[@]}; i++)); do
      case "${opts[$i]}" in
        --driver-java-options) opts[$((i + 1))]="${opts[$((i + 1))]:-} $2"; return ;;
        --driver-java-options=*) opts[$i]="${opts[$i]} $2"; return ;;
      esac
    done
  fi
  for ((i = 0; i < ${#opts[@]}; i++)); do
    case "${opts[$i]}" in
      "$key="*|"--conf=$key="*) opts[$i]="${opts[$i]} $2"; return ;;
    esac
  done
  if [ "$1" = driver ]; then opts+=(--driver-java-options "$2"); else opts+=(--conf "$key=$2"); fi
}

# Native BLAS for Spark ML. ALS does a BLAS call per rating and a LAPACK Cholesky solve per user and item
# through dev.ludovic.netlib; without a native library netlib says so ("Failed to load implementation from:
# dev.ludovic.netlib.blas.JNIBLAS"; from Spark 4.3 "netlib-blas: JNI_OnLoad: dlopen(...) failed") and runs
# Java code: ALS rank 64 on the 2M set fits 1.5x faster with OpenBLAS (benchmarks/bench_als.py). netlib opens
# libblas.so.3 by default, which may be the slow reference BLAS; with OpenBLAS on this machine
# (libopenblas.so.0 known to the dynamic loader, e.g. Debian's libopenblas0) it is pointed at OpenBLAS, for
# BLAS and LAPACK. Local masters only: their tasks run in this machine's JVMs; on a cluster the
# nodes' libraries decide (README, "Native BLAS for ALS"). RECSPARK_NATIVE_BLAS=0 leaves netlib to its
# defaults, =/path/to/lib (a BLAS with LAPACK, or a soname) picks the library; your own
# -Ddev.ludovic.netlib... options leave it to you.
native_blas=""
case "$master" in
  local*)
    case "${RECSPARK_NATIVE_BLAS:-auto}" in
      0|off|false|no) ;;
      auto|1|on|true|yes)
        loader_libs=$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null || true)
        case "$loader_libs" in *"libopenblas.so.0 ("*) native_blas=libopenblas.so.0 ;; esac ;;
      *) native_blas=$RECSPARK_NATIVE_BLAS ;;
    esac ;;
esac
case " ${opts[*]} " in *dev.ludovic.netlib.*) native_blas="" ;; esac
if [ -n "$native_blas" ] && [ "${native_blas#*/}" != "$native_blas" ] && [ ! -e "$native_blas" ]; then
  echo "spark-submit.sh: RECSPARK_NATIVE_BLAS=$native_blas does not exist; ignored (netlib's default)" >&2
  native_blas=""
fi
if [ -n "$native_blas" ]; then
  echo "spark-submit.sh: Spark ML's BLAS and LAPACK: $native_blas (RECSPARK_NATIVE_BLAS=0: netlib's default)" >&2
  netlib="-Ddev.ludovic.netlib.blas.nativeLibPath=$native_blas -Ddev.ludovic.netlib.lapack.nativeLibPath=$native_blas"
  add_java_opts driver "$netlib"  # local[*]: the driver JVM runs the tasks
  case "$master" in local-cluster*) add_java_opts executor "$netlib" ;; esac  # executor JVMs on this machine
fi

exec "$submit" "${opts[@]}" --py-files "$py_files" ${files:+--files "$files"} "$job" "${job_args[@]}"
