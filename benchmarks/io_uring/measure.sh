#!/bin/sh
# Issue 22 item 3: CPU us and syscalls per request of kaserve's epoll loop
# against its io_uring loop, in the same run, rounds interleaved.
#   sh benchmarks/io_uring/measure.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# Needs gcc, liburing-dev (Debian), wrk, strace.  Server on core 0, wrk on core 1.
# CPU: utime+stime of the server from /proc/PID/stat (ticks) and its on-CPU
# time from /proc/PID/schedstat (ns, finer) over an untraced wrk run, divided
# by wrk's request count; syscalls: strace -c -f over a second run.
set -eu
ROUNDS=${1:-3}; SECS=${2:-5}; CONNS=${3:-50}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
gcc -O2 -Wall -DWITH_URING -o "$W/kaserve" "$HERE/kaserve.c" -luring
HZ=$(getconf CLK_TCK)
PORT=18480
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
ns() { cut -d' ' -f1 "/proc/$1/schedstat"; }
reqs() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$1"; }
echo "mode round requests cpu_us_per_req(stat) cpu_us_per_req(schedstat) syscalls_per_req(strace run) top_syscalls"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for mode in epoll uring; do
    PORT=$((PORT + 1))
    taskset -c 0 "$W/kaserve" "$mode" "$PORT" & pid=$!
    sleep 0.3
    taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$PORT/0" > /dev/null    # warm-up
    t0=$(ticks $pid); s0=$(ns $pid)
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$PORT/0" > "$W/wrk.txt"
    t1=$(ticks $pid); s1=$(ns $pid)
    n=$(reqs "$W/wrk.txt")
    strace -c -f -o "$W/strace.txt" -p $pid 2> /dev/null & spid=$!
    sleep 0.5
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$PORT/0" > "$W/wrk2.txt"
    kill -INT $spid; wait $spid || true
    kill -TERM $pid; wait $pid || true
    n2=$(reqs "$W/wrk2.txt")
    awk -v n="$n" -v n2="$n2" -v dt=$((t1 - t0)) -v dns=$((s1 - s0)) -v hz="$HZ" -v mode="$mode" -v r="$r" '
      $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { name = $NF; calls = $4; tot += calls; top = top sprintf("%s=%.2f ", name, calls / n2) }
      END { printf "%s %d %d %.2f %.2f %.2f %s\n", mode, r, n, dt * 1e6 / hz / n, dns / 1e3 / n, tot / n2, top }' "$W/strace.txt"
  done
  r=$((r + 1))
done
