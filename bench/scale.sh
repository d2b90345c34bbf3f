#!/usr/bin/env bash
# scale.sh: the cluster scale run of bench/README.md. NODES gateway
# processes share one port (SO_REUSEPORT) and one private Redis; LOADERS
# load processes attach to it, each holding SUBS subscribers of its own
# channel (spread by the kernel over every node) plus one publisher, and all
# publish PUBLISHES messages at the same moment, so every publish fans out
# across the nodes through Redis. Prints the cluster's connection count and
# memory at that moment and each loader's delivery figures.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-8} LOADERS=${LOADERS:-6} SUBS=${SUBS:-17000} PUBLISHES=${PUBLISHES:-20}
PORT=${PORT:-9100} REDIS_PORT=${REDIS_PORT:-6391} WAIT=${WAIT:-120}
dir=$(mktemp -d /tmp/gateway-scale-XXXX)
export GATEWAY_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

go build -o "$dir/gateway" ./cmd/gateway
go build -o "$dir/bench" ./bench/cmd/bench
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
pids+=($!)
for i in $(seq 1 "$NODES"); do
  "$dir/gateway" serve --listen "127.0.0.1:$PORT" --reuse-port --admin-listen "127.0.0.1:$((PORT + i))" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --data-dir "$dir/node$i" --wsify-listen "" \
    --event-loops 1 --ping-timeout 120s --log-level warn 2>"$dir/node$i.log" &
  pids+=($!)
done
for i in $(seq 1 "$NODES"); do
  until curl -sf "http://127.0.0.1:$((PORT + i))/readyz" >/dev/null; do sleep 0.2; done
done
at=$(( $(date +%s) + WAIT ))
lpids=()
for k in $(seq 0 $((LOADERS - 1))); do
  "$dir/bench" -attach "ws://127.0.0.1:$PORT/api/ws" -scenarios fanout -fanout-subs "$SUBS" \
    -publishes "$PUBLISHES" -channel "scale-$k" -publish-at "$at" -first-source-ip $((2 + k * 40)) \
    -source-ips 40 -dial-rate 1500 -in-flight 300 -timeout 120s -out "$dir/loader$k" >"$dir/loader$k.log" 2>&1 &
  lpids+=($!)
done
sleep $(( at - $(date +%s) ))
echo "== at publish time"
total=0; rss=0
for i in $(seq 1 "$NODES"); do
  c=$(curl -s "http://127.0.0.1:$((PORT + i))/metrics" | awk '/^gateway_connections\{protocol="native"\}/ {print $2}')
  pid=${pids[$i]}
  r=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "node $i: ${c:-0} connections, RSS ${r} kB"
  total=$((total + ${c:-0})); rss=$((rss + r))
done
echo "cluster: $total connections, RSS $rss kB ($(( rss * 1024 / (total > 0 ? total : 1) )) B per connection incl. each process's base)"
for p in "${lpids[@]}"; do wait "$p" || true; done
echo "== loaders"
for k in $(seq 0 $((LOADERS - 1))); do grep -E "conns|deliveries" "$dir/loader$k.log" | tail -1; done
echo "logs and results in $dir"
