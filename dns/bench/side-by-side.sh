#!/usr/bin/env bash
# side-by-side.sh - kubewire's DNS server and CoreDNS under the same dnsperf
# command lines, back to back, on loopback (127.0.0.1:$PORT only).
#
# Data and dnsperf settings are those of ../shared/peers/dns-peer-bench.sh:
# N A records svc<i>.default.svc.cluster.local. Servers:
#   coredns-file         CoreDNS, file plugin (a zone file)
#   coredns-hosts        CoreDNS, hosts plugin (a hosts file)
#   coredns-k8s          CoreDNS, kubernetes plugin + cache 30, fed by the
#                        fake API server ./kubeapi on $ADDR:$KUBEAPI_PORT
#                        (N services with a port and a two-endpoint slice
#                        each; plain HTTP, list+watch only, no apiserver/etcd)
#   coredns-k8s-nocache  the same without cache
#   kubewire             our server, `bench -serve`: N services with the
#                        same names, cluster IPs, ports and endpoints
# Every server runs pinned to SERVER_CPU with taskset, dnsperf to
# CLIENT_CPU, one server per scenario, started and stopped by the PID this
# script recorded. The fake API server, when a coredns-k8s* run is asked
# for, runs for the whole script, pinned to CLIENT_CPU (it is idle once
# CoreDNS has listed), stopped by its PID on exit. ROUNDS rounds of every
# scenario, interleaved.
#
# Scenarios (dnsperf -c $CLIENTS -q $OUTSTANDING -l $DURATION):
#   hit         A of existing names, UDP
#   searchpath  per name: A+AAAA of svc<i>.default.other.svc.cluster.local
#               (NXDOMAIN), then A (answer) + AAAA (NODATA) of
#               svc<i>.default.svc.cluster.local, UDP
#   hit_tcp     hit over TCP (-m tcp)
#   fixed       hit at -Q $FIXED_QPS with -v: latency percentiles
#
# Requirements: dns/bench/peer-setup.sh (dnsperf, dig, CoreDNS), go, taskset.
# Usage (root not needed): dns/bench/side-by-side.sh | tee /tmp/side-by-side.txt
# Tunables (env): PORT DURATION N SERVER_CPU CLIENT_CPU CLIENTS OUTSTANDING
#                 FIXED_QPS ROUNDS RUNS COREDNS_BIN KUBEAPI_PORT
# RUNS lists "server:scenario" pairs, default: all below.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
COREDNS_BIN=${COREDNS_BIN:-$HOME/.cache/kubewire-peers/bin/coredns}
PORT=${PORT:-10053}
ADDR=127.0.0.1
DURATION=${DURATION:-20}
N=${N:-1000}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
FIXED_QPS=${FIXED_QPS:-10000}
ROUNDS=${ROUNDS:-2}
KUBEAPI_PORT=${KUBEAPI_PORT:-18080}
RUNS=${RUNS:-"coredns-file:hit coredns-file:searchpath coredns-file:hit_tcp coredns-hosts:hit coredns-hosts:fixed coredns-k8s:hit coredns-k8s:searchpath coredns-k8s:hit_tcp coredns-k8s:fixed coredns-k8s-nocache:hit kubewire:hit kubewire:searchpath kubewire:hit_tcp kubewire:fixed"}

for tool in dnsperf dig taskset awk sort getconf go; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool (run dns/bench/peer-setup.sh)" >&2; exit 2; }
done
[ -x "$COREDNS_BIN" ] || { echo "CoreDNS not found at $COREDNS_BIN (run dns/bench/peer-setup.sh)" >&2; exit 2; }

# The script and everything it forks (awk, dig, the /proc sampling every
# 0.2 s) stay on the client's CPU: on the server's they would preempt it and
# show up in its tail latency (p99 at a fixed rate went from ~0.1 ms to
# ~0.7 ms for both servers). Servers are pinned to SERVER_CPU explicitly.
taskset -cp "$CLIENT_CPU" $$ >/dev/null
WORK=$(mktemp -d -t dns-side-by-side.XXXXXX)
SERVER_PID=""
KUBEAPI_PID=""
CLIENT_PID=""
# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL; only PIDs this script started.
stop_pid() {
  local pid=$1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=""; }
stop_kubeapi() { stop_pid "$KUBEAPI_PID"; KUBEAPI_PID=""; }
cleanup() { stop_pid "$CLIENT_PID"; stop_server; stop_kubeapi; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT  # exit runs cleanup (once), also on Ctrl-C
trap 'exit 143' TERM

(cd "$REPO" && go build -o "$WORK/kwdns" ./dns/bench)
case " $RUNS" in
  *" coredns-k8s"*) (cd "$REPO" && go build -o "$WORK/kubeapi" ./dns/bench/kubeapi) ;;
esac

# start_kubeapi: the fake Kubernetes API server for coredns-k8s*, once.
start_kubeapi() {
  ( exec taskset -c "$CLIENT_CPU" "$WORK/kubeapi" -addr "$ADDR:$KUBEAPI_PORT" -services "$N" ) > "$WORK/kubeapi.log" 2>&1 &
  KUBEAPI_PID=$!
  for _ in $(seq 1 100); do
    grep -q ' listening on ' "$WORK/kubeapi.log" 2>/dev/null && return 0
    kill -0 "$KUBEAPI_PID" 2>/dev/null || { cat "$WORK/kubeapi.log" >&2; echo "kubeapi died" >&2; exit 1; }
    sleep 0.1
  done
  echo "kubeapi did not start" >&2; cat "$WORK/kubeapi.log" >&2; exit 1
}

gen_data() {
  local i a b
  : > "$WORK/hosts"
  {
    echo '$ORIGIN cluster.local.'
    echo '$TTL 5'
    echo '@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5'
    echo '@ IN NS ns.dns.cluster.local.'
    echo 'ns.dns IN A 10.96.0.10'
  } > "$WORK/zone.db"
  : > "$WORK/q_hit.txt"
  : > "$WORK/q_searchpath.txt"
  for i in $(seq 0 $((N - 1))); do
    a=$(( 1 + i / 250 )); b=$(( 1 + i % 250 ))
    echo "10.96.$a.$b svc$i.default.svc.cluster.local" >> "$WORK/hosts"
    echo "svc$i.default.svc IN A 10.96.$a.$b" >> "$WORK/zone.db"
    echo "svc$i.default.svc.cluster.local A" >> "$WORK/q_hit.txt"
    {
      echo "svc$i.default.other.svc.cluster.local A"
      echo "svc$i.default.other.svc.cluster.local AAAA"
      echo "svc$i.default.svc.cluster.local A"
      echo "svc$i.default.svc.cluster.local AAAA"
    } >> "$WORK/q_searchpath.txt"
  done
  cat > "$WORK/Corefile.coredns-file" <<EOF
cluster.local:$PORT {
    bind $ADDR
    file $WORK/zone.db cluster.local {
        reload 0
    }
}
EOF
  cat > "$WORK/Corefile.coredns-hosts" <<EOF
cluster.local:$PORT {
    bind $ADDR
    hosts $WORK/hosts cluster.local {
        ttl 5
        reload 0
    }
}
EOF
  cat > "$WORK/Corefile.coredns-k8s" <<EOF
.:$PORT {
    bind $ADDR
    kubernetes cluster.local {
        endpoint http://$ADDR:$KUBEAPI_PORT
    }
    cache 30
    errors
}
EOF
  grep -v '^    cache ' "$WORK/Corefile.coredns-k8s" > "$WORK/Corefile.coredns-k8s-nocache"
}

start_server() {
  local server=$1
  case $server in
    coredns-*) ( cd "$WORK" && exec taskset -c "$SERVER_CPU" "$COREDNS_BIN" -conf "$WORK/Corefile.$server" -quiet ) > "$WORK/server.log" 2>&1 & ;;
    kubewire)  ( exec taskset -c "$SERVER_CPU" "$WORK/kwdns" -serve -services "$N" -addr "$ADDR:$PORT" ) > "$WORK/server.log" 2>&1 & ;;
    *) echo "unknown server $server" >&2; exit 2 ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if dig @"$ADDR" -p "$PORT" +time=1 +tries=1 +short svc0.default.svc.cluster.local A 2>/dev/null | grep -q '^10\.'; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "server died" >&2; exit 1; }
    sleep 0.1
  done
  echo "server did not become ready" >&2; cat "$WORK/server.log" >&2; exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

percentiles() {
  grep '^> ' "$1" | awk '{print $NF}' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { printf "no samples"; exit }
    split("50 90 99 99.9", p, " ");
    for (i = 1; i <= 4; i++) { k = int(NR * p[i] / 100); if (k < 1) k = 1; printf "p%s=%.3fms ", p[i], v[k] * 1000 }
    printf "max=%.3fms n=%d", v[NR] * 1000, NR }'
}

# run SERVER SCENARIO ROUND: one server, one dnsperf run; appends a result line.
run() {
  local server=$1 scenario=$2 round=$3 qfile extra=() hz out t0 t1 b0 b1 w0 w1 rss0
  case $scenario in
    hit)        qfile=$WORK/q_hit.txt ;;
    searchpath) qfile=$WORK/q_searchpath.txt ;;
    hit_tcp)    qfile=$WORK/q_hit.txt; extra=(-m tcp) ;;
    fixed)      qfile=$WORK/q_hit.txt; extra=(-Q "$FIXED_QPS" -v) ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
  hz=$(getconf CLK_TCK)
  out=$WORK/$server.$scenario.$round.out
  start_server "$server"
  rss0=$(rss_kb "$SERVER_PID")
  t0=$(cpu_ticks "$SERVER_PID"); b0=$(busy_ticks); w0=$(date +%s.%N)
  echo "+ taskset -c $CLIENT_CPU dnsperf -s $ADDR -p $PORT -d $(basename "$qfile") -l $DURATION -c $CLIENTS -q $OUTSTANDING ${extra[*]}   # $server, round $round"
  taskset -c "$CLIENT_CPU" dnsperf -s "$ADDR" -p "$PORT" -d "$qfile" -l "$DURATION" \
    -c "$CLIENTS" -q "$OUTSTANDING" "${extra[@]}" > "$out" 2>&1 &
  CLIENT_PID=$!
  local cpid=$CLIENT_PID c0=0 c1=0
  # client ticks, sampled every 0.2 s while it runs (approximate)
  sleep 0.2; c0=$(cpu_ticks "$cpid" 2>/dev/null || echo 0)
  while kill -0 "$cpid" 2>/dev/null; do
    c1=$(cpu_ticks "$cpid" 2>/dev/null || echo "$c1"); sleep 0.2
  done
  wait "$cpid" 2>/dev/null || true
  CLIENT_PID=""
  t1=$(cpu_ticks "$SERVER_PID"); b1=$(busy_ticks); w1=$(date +%s.%N)
  local qps lost codes lat rss1 hwm pct=""
  qps=$(awk '/Queries per second/ {print $4}' "$out")
  lost=$(awk '/Queries lost/ {print $3}' "$out")
  codes=$(awk -F': ' '/Response codes/ {print $2}' "$out" | tr -d ' ')
  lat=$(awk '/Average Latency/ {print $4; exit}' "$out")
  rss1=$(rss_kb "$SERVER_PID"); hwm=$(hwm_kb "$SERVER_PID")
  [ "$scenario" = fixed ] && pct=$(percentiles "$out")
  stop_server
  awk -v s="$server" -v sc="$scenario" -v r="$round" -v q="$qps" -v l="$lost" -v c="$codes" -v lat="$lat" \
      -v a="$t0" -v b="$t1" -v cl="$((c1 - c0))" -v m0="$b0" -v m1="$b1" -v hz="$hz" -v w0="$w0" -v w1="$w1" \
      -v rss0="$rss0" -v rss1="$rss1" -v hwm="$hwm" -v pct="$pct" 'BEGIN {
    wall = w1 - w0; cpu = (b - a) / hz / wall; other = ((m1 - m0) - (b - a) - cl) / hz / wall; if (other < 0) other = 0
    perc = (cpu > 0) ? q / cpu : 0
    printf "RESULT %-19s %-10s r%s qps=%-9.0f srvcpu=%.0f%% qps/core=%-9.0f clientcpu=%.0f%% avglat=%ss lost=%s codes=%s otherbusy=%.0f%% rss_idle=%dkB rss_after=%dkB peak=%dkB %s\n",
      s, sc, r, q, 100 * cpu, perc, 100 * cl / hz / wall, lat, l, c, 100 * other, rss0, rss1, hwm, pct }' | tee -a "$WORK/results.txt"
}

echo "CoreDNS: $("$COREDNS_BIN" -version 2>/dev/null | head -1); dnsperf: $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}'); $(go version)"
echo "host: $(nproc) CPUs, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "records: $N, duration: ${DURATION}s, dnsperf -c $CLIENTS -q $OUTSTANDING, server CPU $SERVER_CPU, client CPU $CLIENT_CPU, rounds: $ROUNDS"
gen_data
case " $RUNS" in
  *" coredns-k8s"*) start_kubeapi ;;
esac
for round in $(seq 1 "$ROUNDS"); do
  for r in $RUNS; do
    run "${r%%:*}" "${r##*:}" "$round"
  done
done
echo
echo "=== summary: median over rounds (otherbusy: machine busy time outside server and client, in % of one core, per round) ==="
awk '{ k = $2 " " $3; split($5, q, "="); split($7, c, "="); split($12, o, "=");
       print k, q[2], c[2], o[2] }' "$WORK/results.txt" | sort -k1,2 -k3,3n |
  awk '{ k = $1 " " $2; n[k]++; q[k, n[k]] = $3; c[k, n[k]] = $4; o[k] = o[k] " " $5 }
       END { for (k in n) { m = int((n[k] + 1) / 2);
             printf "%-30s qps=%-8.0f qps/core=%-8.0f rounds=%d otherbusy:%s\n", k, q[k, m], c[k, m], n[k], o[k] } }' | sort
if [ -n "$KUBEAPI_PID" ]; then
  echo
  echo "=== fake API server: requests by path and status (query strings cut; a 404 is a path CoreDNS asked for that kubeapi does not serve) ==="
  awk '$2 == "GET" { split($3, u, "?"); print $2, u[1], $4, (u[2] ~ /(^|&)watch=(true|1)(&|$)/ ? "watch" : "") }' "$WORK/kubeapi.log" | sort | uniq -c
fi
echo "done; servers stopped, $WORK removed on exit"
