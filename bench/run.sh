#!/usr/bin/env bash
# Runs the end-to-end throughput comparison of BENCHMARKS.md: a nats-server
# process, then for each fsync mode the minimal consume→publish→ack program
# and the worker's echo route, each driven by `publisher bench` with the
# same load. Usage: bench/run.sh [COUNT] [CONCURRENCY] [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-50000} CONC=${2:-64} SIZE=${3:-128} ROUNDS=${4:-3}
BIN=$(mktemp -d) && trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$BIN"' EXIT
go build -o "$BIN/nats-server" github.com/nats-io/nats-server/v2
go build -o "$BIN/worker" ./cmd/worker
go build -o "$BIN/publisher" ./cmd/publisher
go build -o "$BIN/minimal" ./bench/minimal
PORT=14333 URL=nats://127.0.0.1:14333

for SYNC in ${SYNCS:-default always}; do
	for ROUND in $(seq "$ROUNDS"); do
		for IMPL in minimal worker; do
			STORE=$(mktemp -d)
			{
				echo "listen: 127.0.0.1:$PORT"
				echo "jetstream { store_dir: \"$STORE\""
				[ "$SYNC" = always ] && echo "  sync_interval: always"
				echo "}"
			} >"$BIN/server.conf"
			"$BIN/nats-server" -c "$BIN/server.conf" >/dev/null 2>&1 &
			SRV=$!
			until "$BIN/publisher" --nats-url $URL result x y >/dev/null 2>&1 || [ $? -eq 1 ]; do sleep 0.1; done
			if [ $IMPL = minimal ]; then
				"$BIN/minimal" --nats-url $URL &
			else
				"$BIN/worker" --nats-url $URL --log-level warn &
			fi
			PROC=$!
			"$BIN/publisher" --nats-url $URL bench --count 2000 --concurrency "$CONC" >/dev/null # warm up, creates streams
			printf 'fsync=%s impl=%s round=%s: ' "$SYNC" "$IMPL" "$ROUND"
			"$BIN/publisher" --nats-url $URL bench --count "$COUNT" --concurrency "$CONC" --size "$SIZE" --timeout 5m
			printf 'fsync=%s impl=%s idle: ' "$SYNC" "$IMPL"
			"$BIN/publisher" --nats-url $URL bench --count 1000 --concurrency 1 --rate 200 --size "$SIZE"
			kill -TERM $PROC && wait $PROC || true
			kill -TERM $SRV && wait $SRV || true
			rm -rf "$STORE"
		done
	done
done
