#!/usr/bin/env bash
# scale.sh: the cluster scale run of bench/README.md ("Scaling up").
#
# NODES gateway processes share one port (--reuse-port) and one private
# Redis; LOADERS load processes (`bench -attach -scenarios fanout`) each
# hold PER_LOADER subscribers of a channel of their own plus one publisher,
# dialling from source addresses of their own over 127/8. The kernel spreads
# every loader's connections over all the nodes, so every publish fans out
# across the nodes through Redis. Every process stays under the 20,000 open
# files of one process, hence many processes.
#
# The loaders meet at two barriers (bench -sync-dir): once every dial is
# done ("connected"), the script prints each node's connections, RSS and
# Go heap, the loaders' RSS, the kernel's socket figures and the dial
# errors by cause; then all loaders publish PUBLISHES messages at once and,
# once their deliveries are counted ("delivered"), the script prints the
# same again with the deliveries expected and got and their latency. If a
# kernel limit stops the dials, the dial errors by errno (EADDRNOTAVAIL,
# EMFILE, ENFILE, ENOMEM, timeout = SYN dropped), the TCP counters of
# /proc/net/netstat that moved (listen overflows, memory pressure, prunes)
# and any node that died say which, at what count.
#
# Knobs (environment), zero or empty meaning the default:
#   CONNS          subscribers in all (100000); 1000000 for the full run
#   PER_LOADER     subscribers per load process (18000; at most ~19,600)
#   LOADERS        load processes (CONNS / PER_LOADER, rounded up)
#   NODES          gateway processes (CONNS / 17500, rounded up, at least 2:
#                  each must stay under 20,000 files with the kernel's
#                  uneven spread)
#   EVENT_LOOPS    --event-loops of each node (1)
#   GATEWAY_FLAGS  more flags for every node ("")
#   GATEWAY_ENV    environment for every node, e.g. "GOGC=50" ("")
#   PUBLISHES      publishes per loader, all at once (5)
#   DIAL_RATE      dials per second per loader (8000 / LOADERS, at least 100)
#   IN_FLIGHT      handshakes in flight per loader (100)
#   SOURCE_IPS     source addresses per loader (20; each gives 28k ports)
#   PING_INTERVAL  the loaders' protocol Ping period (240s); nodes close a
#                  client silent 3 times as long
#   SETTLE         seconds to hold every connection idle after the dials
#                  before sampling again and publishing (150: past the Go
#                  runtime's forced collection every 2 minutes, so that the
#                  handshakes' garbage is gone from the figures); 0: none
#   TIMEOUT        longest wait for the deliveries, per loader (300s)
#   CONNECT_WAIT   longest wait for every loader to finish dialling (1800s)
#   SYSCTL         1: for the run (restored at the end) raise
#                  net.core.netdev_max_backlog to BACKLOG and net.ipv4.tcp_mem
#                  to 4x; 0: leave the kernel alone (0). With the default
#                  backlog of 1000, the bursts of TCP keepalive probes (the
#                  nodes' sockets: 60 s idle, then every 12 s, 5 tries) of
#                  connections opened together overflow the loopback input
#                  queue: the probes are dropped, and from ~300,000 idle
#                  connections the kernel aborts some (TCPAbortOnTimeout)
#   BACKLOG        net.core.netdev_max_backlog with SYSCTL=1 (100000)
#   PORT, REDIS_PORT  (9100, 6391); the nodes' admin ports are PORT+1...
#   OUT            a directory for the logs (a new /tmp/gateway-scale-*)
#
# Everything it starts is stopped on exit, Ctrl-C or failure (loaders, nodes,
# Redis), and a changed sysctl is restored.
set -euo pipefail
cd "$(dirname "$0")/.."

ceil() { echo $(( ($1 + $2 - 1) / $2 )); }
CONNS=${CONNS:-100000}
PER_LOADER=${PER_LOADER:-18000}
LOADERS=${LOADERS:-$(ceil "$CONNS" "$PER_LOADER")}
NODES=${NODES:-$(ceil "$CONNS" 17500)}
(( NODES < 2 )) && NODES=2
EVENT_LOOPS=${EVENT_LOOPS:-1} GATEWAY_FLAGS=${GATEWAY_FLAGS:-} GATEWAY_ENV=${GATEWAY_ENV:-}
PUBLISHES=${PUBLISHES:-5}
DIAL_RATE=${DIAL_RATE:-$(( 8000 / LOADERS > 100 ? 8000 / LOADERS : 100 ))}
IN_FLIGHT=${IN_FLIGHT:-100} SOURCE_IPS=${SOURCE_IPS:-20}
PING_INTERVAL=${PING_INTERVAL:-240s}
SETTLE=${SETTLE:-150} TIMEOUT=${TIMEOUT:-300s} CONNECT_WAIT=${CONNECT_WAIT:-1800} SYSCTL=${SYSCTL:-0} BACKLOG=${BACKLOG:-100000}
PORT=${PORT:-9100} REDIS_PORT=${REDIS_PORT:-6391}
dir=${OUT:-$(mktemp -d /tmp/gateway-scale-XXXX)}
mkdir -p "$dir/sync"
export GATEWAY_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

node_pids=() loader_pids=() redis_pid="" tcp_mem_saved="" backlog_saved=""
alive() { local n=0 p; for p in "$@"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done; echo "$n"; }
cleanup() {
  trap - EXIT INT TERM
  local p t=0
  for p in "${loader_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  while (( t < 30 )) && (( $(alive "${loader_pids[@]}") > 0 )); do sleep 1; t=$((t + 1)); done
  for p in "${loader_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  # SIGKILL: a drain of every connection (1001, spread over 10 s) would
  # cost minutes of CPU at a million; the kernel closes the sockets.
  for p in "${node_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [[ -n $redis_pid ]] && kill -TERM "$redis_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ -n $tcp_mem_saved ]]; then
    sysctl -qw net.ipv4.tcp_mem="$tcp_mem_saved" && echo "restored net.ipv4.tcp_mem = $tcp_mem_saved"
  fi
  if [[ -n $backlog_saved ]]; then
    sysctl -qw net.core.netdev_max_backlog="$backlog_saved" && echo "restored net.core.netdev_max_backlog = $backlog_saved"
  fi
  echo "logs and results in $dir"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# private memory (RssAnon) and proportional set size (Pss: pages shared
# with other processes, such as the binary's text, split among them), kB
anon() { awk '/^RssAnon/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
metric() { curl -s --max-time 10 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {printf "%d", $2}'; }
from() { awk -v m="$2" '$1 == m {printf "%d", $2}' "$1"; }
# packets the kernel dropped because a CPU's input backlog was full
# (net.core.netdev_max_backlog): loopback traffic goes through it
softnet_drops() { awk '{s += strtonum("0x" $2)} END {print s}' /proc/net/softnet_stat; }
netstat_tcp() { # TcpExt counters that a kernel limit moves
  awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) n[i] = $i; h = 1 } else for (i = 2; i <= NF; i++) print n[i], $i }' /proc/net/netstat |
    grep -E '^(ListenOverflows|ListenDrops|TCPMemoryPressures|TCPAbortOnMemory|TCPBacklogDrop|PruneCalled|RcvPruned|OfoPruned|TCPRcvQDrop|TCPReqQFullDrop|TCPReqQFullDoCookies|TCPTimeouts|TCPSynRetrans|TCPAbortFailed|TCPAbortOnTimeout|TCPAbortOnMemory|TCPKeepAlive) '
}

echo "== scale run $(date -u +%FT%TZ), revision $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo '+changes')"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r), open files $(ulimit -Hn) per process"
for k in net.ipv4.ip_local_port_range fs.nr_open fs.file-max net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.tcp_mem \
  net.core.netdev_max_backlog net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_max_orphans net.netfilter.nf_conntrack_max; do
  echo "  $k = $(sysctl -n "$k" 2>/dev/null | tr '\t' ' ')"
done
echo "settings: CONNS=$CONNS LOADERS=$LOADERS x PER_LOADER=$PER_LOADER NODES=$NODES EVENT_LOOPS=$EVENT_LOOPS PUBLISHES=$PUBLISHES" \
  "DIAL_RATE=$DIAL_RATE/loader IN_FLIGHT=$IN_FLIGHT SOURCE_IPS=$SOURCE_IPS PING_INTERVAL=$PING_INTERVAL SETTLE=$SETTLE" \
  "GATEWAY_FLAGS='$GATEWAY_FLAGS' GATEWAY_ENV='$GATEWAY_ENV' SYSCTL=$SYSCTL"
if (( PER_LOADER > 19600 )); then echo "PER_LOADER $PER_LOADER: a loader would pass 20,000 open files" >&2; exit 2; fi
if (( SYSCTL == 1 )); then
  tcp_mem_saved=$(sysctl -n net.ipv4.tcp_mem | tr '\t' ' ') backlog_saved=$(sysctl -n net.core.netdev_max_backlog)
  sysctl -qw net.ipv4.tcp_mem="$(echo "$tcp_mem_saved" | awk '{print $1*4, $2*4, $3*4}')"
  sysctl -qw net.core.netdev_max_backlog="$BACKLOG"
  echo "  set for the run: net.ipv4.tcp_mem = $(sysctl -n net.ipv4.tcp_mem | tr '\t' ' ')," \
    "net.core.netdev_max_backlog = $(sysctl -n net.core.netdev_max_backlog)"
fi

go build -o "$dir/gateway" ./cmd/gateway
go build -o "$dir/bench" ./bench/cmd/bench
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
ping_s=${PING_INTERVAL%s}
for i in $(seq 1 "$NODES"); do
  env $GATEWAY_ENV "$dir/gateway" serve --listen "127.0.0.1:$PORT" --reuse-port --admin-listen "127.0.0.1:$((PORT + i))" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --data-dir "$dir/node$i" --wsify-listen "" \
    --event-loops "$EVENT_LOOPS" --ping-timeout "$((ping_s * 3))s" --log-level warn $GATEWAY_FLAGS 2>"$dir/node$i.log" &
  node_pids+=($!)
done
for i in $(seq 1 "$NODES"); do
  until curl -sf "http://127.0.0.1:$((PORT + i))/readyz" >/dev/null; do
    kill -0 "${node_pids[$((i - 1))]}" 2>/dev/null || { echo "node $i died:"; tail "$dir/node$i.log"; exit 1; }
    sleep 0.2
  done
done
sleep 1
base_rss=0 base_anon=0 base_pss=0
for p in "${node_pids[@]}"; do
  base_rss=$((base_rss + $(kb "$p"))) base_anon=$((base_anon + $(anon "$p"))) base_pss=$((base_pss + $(pss "$p")))
done
echo "nodes ready: $NODES processes before any connection: RSS $base_rss kB in all ($((base_rss / NODES)) kB each)," \
  "of which private (RssAnon) $base_anon kB ($((base_anon / NODES)) kB each); Pss $base_pss kB in all"
netstat_tcp >"$dir/netstat.before"
drops0=$(softnet_drops)
slab0=$(awk '/^Slab:/ {print $2}' /proc/meminfo)

start=$(date +%s)
for k in $(seq 0 $((LOADERS - 1))); do
  n=$PER_LOADER
  (( k == LOADERS - 1 )) && n=$(( CONNS - PER_LOADER * (LOADERS - 1) ))
  "$dir/bench" -attach "ws://127.0.0.1:$PORT/api/ws" -scenarios fanout -fanout-subs "$n" -publishes "$PUBLISHES" \
    -channel "scale-$k" -sync-dir "$dir/sync" -first-source-ip $((2 + k * SOURCE_IPS)) -source-ips "$SOURCE_IPS" \
    -dial-rate "$DIAL_RATE" -in-flight "$IN_FLIGHT" -ping-interval "$PING_INTERVAL" -timeout "$TIMEOUT" \
    -out "$dir/loader$k" >"$dir/loader$k.log" 2>&1 &
  loader_pids+=($!)
done

# wait_stage STAGE: until every live loader wrote its file for STAGE.
wait_stage() {
  local stage=$1 limit=$2 t0 n live last=0
  t0=$(date +%s)
  while :; do
    n=$(find "$dir/sync" -name "$stage.scale-*" | wc -l)
    live=$(alive "${loader_pids[@]}")
    (( n >= live )) && break
    if (( $(date +%s) - t0 > limit )); then echo "  gave up waiting for $stage after ${limit}s: $n of $live loaders"; break; fi
    if [[ $stage == connected ]] && (( $(date +%s) - last >= 15 )); then
      last=$(date +%s)
      local c=0 i
      for i in $(seq 1 "$NODES"); do c=$((c + $(metric $((PORT + i)) 'gateway_connections{protocol="native"}' || echo 0))); done
      echo "  $(( $(date +%s) - start ))s: $c connections on the nodes, $n of $live loaders done dialling, load $(cut -d' ' -f1-3 /proc/loadavg), MemAvailable $(awk '/MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    fi
    sleep 1
  done
  if (( live < LOADERS )); then
    echo "  $((LOADERS - live)) loader(s) exited early:"
    for k in $(seq 0 $((LOADERS - 1))); do
      kill -0 "${loader_pids[$k]}" 2>/dev/null || tail -n 3 "$dir/loader$k.log" | sed "s/^/    loader $k: /"
    done
  fi
}

# report STAGE: the cluster's figures now.
report() {
  local stage=$1 sync=${2:-$1} m total=0 rss=0 an=0 ps=0 heap=0 lrss=0 lpss=0 c r h i p dead=0
  echo "== $stage ($(( $(date +%s) - start ))s after the first dial)"
  : >"$dir/nodes.$stage"
  for i in $(seq 1 "$NODES"); do
    p=${node_pids[$((i - 1))]}
    if ! kill -0 "$p" 2>/dev/null; then
      echo "  node $i DIED: $(tail -n 2 "$dir/node$i.log" | tr '\n' ' ')"; dead=$((dead + 1)); continue
    fi
    m=$dir/metrics.$stage.$i
    curl -s --max-time 20 "http://127.0.0.1:$((PORT + i))/metrics" >"$m" || true
    c=$(from "$m" 'gateway_connections{protocol="native"}'); r=$(kb "$p"); h=$(from "$m" go_memstats_heap_inuse_bytes)
    printf "%d %d %d %d\n" "$i" "${c:-0}" "$r" "$(( ${h:-0} / 1024 ))" >>"$dir/nodes.$stage"
    total=$((total + ${c:-0})); rss=$((rss + r)); heap=$((heap + ${h:-0} / 1024))
    an=$((an + $(anon "$p"))); ps=$((ps + $(pss "$p")))
  done
  for p in "${loader_pids[@]}"; do lrss=$((lrss + $(kb "$p"))); lpss=$((lpss + $(pss "$p"))); done
  local per=$(( total > 0 ? total : 1 ))
  awk '{printf "node %2d: %6d conns, RSS %6d kB, heap %6d kB\n", $1, $2, $3, $4}' "$dir/nodes.$stage" | paste -d'|' - - - | sed 's/^/  /; s/|/  |  /g'
  awk '{n++; s += $2; if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2}
    END {if (n) printf "  per node: min %d, max %d, mean %.0f connections\n", min, max, s / n}' "$dir/nodes.$stage"
  echo "  nodes: $total connections; RSS $rss kB: $(( rss * 1024 / per )) B per connection with each process's base" \
    "(the binary's shared pages counted once per process), $(( (rss - base_rss) * 1024 / per )) B without the empty nodes' RSS;" \
    "Pss $ps kB: $(( ps * 1024 / per )) B per connection with the bases; private (RssAnon) $an kB:" \
    "$(( (an - base_anon) * 1024 / per )) B per connection over the empty nodes'; Go heap in use $heap kB ($(( heap * 1024 / per )) B per connection)"
  echo "  loaders: RSS $lrss kB, Pss $lpss kB ($(( lpss * 1024 / per )) B per connection)"
  echo "  kernel: $(grep '^TCP:' /proc/net/sockstat) (mem in pages), slab $(( ($(awk '/^Slab:/ {print $2}' /proc/meminfo) - slab0) / 1024 )) MiB more than before," \
    "MemAvailable $(awk '/MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), files $(cut -f1 /proc/sys/fs/file-nr) open," \
    "conntrack $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo n/a)"
  cat "$dir"/metrics."$stage".* | awk '/^gateway_(disconnects_total|accept_errors_total|slow_consumer_disconnects_total|handler_panics_total)/ && $2 > 0 {s[$1] += $2}
    END {for (k in s) printf "  nodes %s %d\n", k, s[k]}' | sort
  netstat_tcp >"$dir/netstat.$stage"
  join "$dir/netstat.before" "$dir/netstat.$stage" | awk '$3 != $2 {printf "  TcpExt %s +%d\n", $1, $3 - $2}'
  echo "  backlog drops (softnet_stat, net.core.netdev_max_backlog = $(sysctl -n net.core.netdev_max_backlog)): +$(( $(softnet_drops) - drops0 ))"
  cat "$dir"/sync/"$sync".scale-* 2>/dev/null | awk '
    /^cause / {cause[$2] += $3; next}
    {for (i = 1; i < NF; i += 2) {s[$i] += $(i + 1); if ($(i + 1) > mx[$i]) mx[$i] = $(i + 1)}; n++}
    END {
      printf "  loaders (%d): %d connections, %d failed dials", n, s["conns"], s["errors"]
      for (c in cause) printf "; %s %d", c, cause[c]
      printf "\n"
      if (s["expected"] > 0) printf "  fan-out: expected %d deliveries, got %d, lost %d, duplicated %d, reordered %d; per loader p50 up to %.1f ms, p99 up to %.1f ms, max %.1f ms; %.0f deliveries/s summed over loaders\n",
        s["expected"], s["delivered"], s["lost"], s["dup"], s["reord"], mx["p50"], mx["p99"], mx["max"], s["dps"]
    }'
  [[ $dead -gt 0 ]] && echo "  $dead node(s) died"
  return 0
}

wait_stage connected "$CONNECT_WAIT"
report connected
if (( SETTLE > 0 )); then
  echo "   (holding ${SETTLE}s, idle: the Go runtime forces a collection every 2 minutes and then returns freed pages)"
  sleep "$SETTLE"
  report "idle-${SETTLE}s" connected
fi
touch "$dir/sync/connected.go"
wait_stage delivered $(( ${TIMEOUT%s} + 120 ))
report delivered
touch "$dir/sync/delivered.go"
for p in "${loader_pids[@]}"; do wait "$p" || true; done
echo "== loaders' own reports"
for k in $(seq 0 $((LOADERS - 1))); do grep -E "conns|error" "$dir/loader$k.log" | sed "s/^ */  loader $k: /"; done
