#!/usr/bin/env bash
# How long a stop takes while a client stalls mid-body.
#
#   tools/lifecycle/stall.sh <resnet18-fc binary> <port> pre-stop|sigterm [serve flags...]
#
# Starts `serve` without a model (none is needed to read a body), opens one connection that
# declares a 100 kB body, sends 10 bytes of it and stalls; then either calls GET /pre-stop or
# sends SIGTERM, and prints the answer, the seconds until it came and until the process exited.
set -euo pipefail
bin=$1 port=$2 mode=$3
shift 3
dir=$(mktemp -d)
"$bin" serve --port "$port" --model "$dir/none.safetensors" --offline "$@" >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n0123456789' >&3
sleep 0.5
start=$(date +%s.%N)
if [ "$mode" = pre-stop ]; then
  answer=$(curl -s --max-time 120 "http://127.0.0.1:$port/pre-stop")
else
  kill -TERM "$pid"
  answer="(SIGTERM sent)"
fi
answered=$(date +%s.%N)
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
exited=$(date +%s.%N)
echo "answer: ${answer:-<none: connection closed without an answer>}"
echo "seconds until answered: $(echo "$answered - $start" | bc)"
echo "seconds until the process exited: $(echo "$exited - $start" | bc)"
