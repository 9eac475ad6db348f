#!/usr/bin/env bash
# Black-box backlog drain (issue 13 item 5; BENCHMARKS.md section 7): a
# separate nats-server process, TASKS preloaded with `nats bench`, then the
# program under test started on the backlog; its drain rate is read from the
# RESULTS stream's first and last stored timestamps (count / (last - first)).
# Each round gets a fresh server and store, so no round sees another's state.
#
# Usage: bench/drain.sh [ROUNDS]        (default 3, interleaved minimal/worker)
#   FSYNC=default|always  server fsync: default = no sync_interval (the server's
#                         2-minute default), always = sync_interval: always
#   TASKS=100000 SIZE=128 backlog size and payload bytes
#   STALLCHECK=N          instead: N worker drains in a row, reporting stalls
#   NATS=path             natscli v0.3.0 (default: `nats` in PATH)
#   PORT=14334            server port
#   BASE=rev              also drain with the worker built at git revision
#                         rev (interleaved, third in each round): before/after
#   POLICIES=1            also drain with the echo route on a backend with
#                         every policy (timeout, retry, breaker,
#                         max_concurrency, rate_limit that never binds)
#   WORKER_ENV="K=V ..."  environment of the worker only (BASE_ENV: of the base
#                         worker), e.g. WORKER_ENV=GOGC=400 against BASE=HEAD
#   PERF=dir              record each drain with `perf record -g` into
#                         dir/IMPL-N.data (`perf report -i ...` reads it)
#
# A round is flagged as a stall when its rate is under 30% of the median of
# its implementation, when the result count did not move for more than 5 s,
# or when the results were not all stored before the timeout. The worker's
# (and minimal's) stderr is searched for `no heartbeat received`.
# Everything it starts is stopped on exit; it writes only under a mktemp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TASKS=${TASKS:-100000} SIZE=${SIZE:-128} FSYNC=${FSYNC:-default} STALLCHECK=${STALLCHECK:-0}
PORT=${PORT:-14334} URL=nats://127.0.0.1:${PORT:-14334}
NATS=${NATS:-$(command -v nats || true)}
if [ -z "$NATS" ] || ! "$NATS" --version >/dev/null 2>&1; then
	cat >&2 <<-'EOF'
		drain.sh: natscli not found; build v0.3.0 outside the repo and pass NATS=path:
		  mkdir /tmp/natscli && cd /tmp/natscli && go mod init tools && go get github.com/nats-io/natscli@v0.3.0
		  printf '//go:build tools\npackage tools\nimport _ "github.com/nats-io/natscli/nats"\n' >tools.go
		  go mod tidy && go build -o nats github.com/nats-io/natscli/nats
	EOF
	exit 2
fi
case $FSYNC in default | always) ;; *) echo "drain.sh: FSYNC must be default or always" >&2 && exit 2 ;; esac

TMP=$(mktemp -d)
PIDS=()
stop() { # stop PID: TERM, then KILL after 30 s
	local p=$1
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}
cleanup() {
	for p in "${PIDS[@]}"; do stop "$p"; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$TMP/nats-server" github.com/nats-io/nats-server/v2
go build -o "$TMP/worker" ./cmd/worker
go build -o "$TMP/minimal" ./bench/minimal
go build -o "$TMP/drain" ./bench/drain
if [ "${POLICIES:-0}" = 1 ]; then
	# The echo route on a backend with every policy (issue 13: the full
	# stack within 0.9x of the bare route); the limits never bind here.
	cat >"$TMP/policies.yaml" <<-'EOF'
		backends:
		  echoer:
		    builtin: echo
		    timeout: 2s
		    retry: {max_attempts: 3, backoff: 100ms, max_backoff: 30s, jitter: 0.2}
		    breaker: {failure_threshold: 3, delay: 10s, success_threshold: 3}
		    max_concurrency: 1000
		    rate_limit: 1000000/s
		routes:
		  echo: {backends: [echoer]}
	EOF
fi
if [ -n "${BASE:-}" ]; then
	# The worker as of another commit, built from a copy of that tree (no
	# checkout, no worktree): before/after in the same run.
	mkdir "$TMP/base"
	git archive "$BASE" | tar -x -C "$TMP/base"
	(cd "$TMP/base" && go build -o "$TMP/base-worker" ./cmd/worker)
fi
drain() { "$TMP/drain" "$1" --nats-url "$URL" "${@:2}"; }

start() { # start NAME CMD...: run in the background, stderr+stdout to $TMP/NAME.log; sets LAST
	local name=$1
	shift
	"$@" >"$TMP/$name.log" 2>&1 &
	LAST=$!
	PIDS+=("$LAST")
}
forget() { # forget PID: stop it and drop it from the cleanup list
	stop "$1"
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}
impl_cmd() {
	case $1 in
	worker) echo "env ${WORKER_ENV:-} $TMP/worker --nats-url $URL --log-level warn" ;;
	minimal) echo "$TMP/minimal --nats-url $URL" ;;
	base) echo "env ${BASE_ENV:-} $TMP/base-worker --nats-url $URL --log-level warn" ;;
	policies) echo "$TMP/worker --nats-url $URL --log-level warn --config $TMP/policies.yaml" ;;
	esac
}

# cputime PID: user+system CPU seconds the process has used so far. A round
# prints the program's (its drain, plus its start) and the server's during
# the drain: what each costs per task, which a noisy machine's rate hides.
cputime() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo "?"
}

# round IMPL N: one drain on a fresh server; prints the round's line and
# appends "impl rate max_gap timeout heartbeat" to $TMP/rounds.
round() {
	local impl=$1 n=$2 store="$TMP/store" line hb
	rm -rf "$store"
	{
		echo "listen: 127.0.0.1:$PORT"
		echo "jetstream { store_dir: \"$store\""
		[ "$FSYNC" = always ] && echo "  sync_interval: always"
		echo "}"
	} >"$TMP/server.conf"
	start server "$TMP/nats-server" -c "$TMP/server.conf"
	local srv=$LAST
	drain wait --timeout 30s || { cat "$TMP/server.log" >&2; exit 1; }
	# The program makes its own streams and consumer, then goes: the backlog
	# must be stored before it consumes.
	start "$impl-setup" $(impl_cmd "$impl")
	if ! drain wait --stream TASKS --stream RESULTS --timeout 30s; then
		echo "round $n: streams not created; logs:" >&2
		cat "$TMP/server.log" "$TMP/$impl-setup.log" >&2
		exit 1
	fi
	forget "$LAST"
	# --timeout: the 5 s default ack wait is too short with fsync=always on a busy disk.
	"$NATS" --no-context -s "$URL" --timeout 60s bench js pub async tasks.echo --stream TASKS \
		--msgs "$TASKS" --size "$SIZE" --no-progress >"$TMP/preload.log" 2>&1 ||
		{ cat "$TMP/preload.log" >&2; exit 1; }
	local have
	have=$(drain count --stream TASKS --timeout 30s)
	if [ "$have" != "$TASKS" ]; then
		echo "round $n: TASKS holds $have messages, want $TASKS" >&2
		exit 1
	fi
	local srv0
	srv0=$(cputime "$srv")
	start "$impl" $(impl_cmd "$impl")
	local proc=$LAST perf=
	if [ -n "${PERF:-}" ]; then
		mkdir -p "$PERF"
		start "perf-$impl" perf record -q -F 499 -g -p "$proc" -o "$PERF/$impl-$n.data"
		perf=$LAST
	fi
	line=$(drain watch --count "$TASKS" --timeout "${WATCH_TIMEOUT:-5m}")
	local cpu srvcpu
	cpu=$(cputime "$proc") srvcpu=$(awk -v a="$(cputime "$srv")" -v b="$srv0" 'BEGIN { printf "%.2f", a - b }')
	[ -z "$perf" ] || { kill -INT "$perf" 2>/dev/null || true; forget "$perf"; }
	forget "$proc"
	forget "$srv"
	hb=$(grep -c 'no heartbeat received' "$TMP/$impl.log" || true)
	printf 'round=%s impl=%-7s fsync=%s %s heartbeat_lost=%s cpu=%ss server_cpu=%ss\n' "$n" "$impl" "$FSYNC" "$line" "$hb" "$cpu" "$srvcpu"
	local rate gap to
	rate=$(sed -E 's/.* rate=([0-9.]+).*/\1/' <<<"$line")
	gap=$(sed -E 's/.* max_gap=([0-9.]+)s.*/\1/' <<<"$line")
	to=$(sed -E 's/.* timeout=([a-z]+).*/\1/' <<<"$line")
	echo "$impl $rate $gap $to $hb" >>"$TMP/rounds"
}

median() { # median IMPL: median rate of IMPL's rounds
	awk -v i="$1" '$1==i {print $2}' "$TMP/rounds" | sort -n |
		awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# stalls IMPL: counts and lists IMPL's stalled rounds.
stalls() {
	awk -v i="$1" -v m="$(median "$1")" '$1==i {
		n++; why=""
		if ($2 < 0.3*m) why=why " rate<30%"
		if ($3 > 5) why=why " gap=" $3 "s"
		if ($4 == "true") why=why " timeout"
		if (why != "") { s++; printf "  stall: %s round %d:%s\n", i, n, why }
		hb += $5
	} END { printf "%s: %d of %d rounds stalled, %d \"no heartbeat received\" lines\n", i, s, n, hb }' "$TMP/rounds"
}

echo "drain.sh: $TASKS tasks of $SIZE B, fsync=$FSYNC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $("$TMP/nats-server" --version)"
: >"$TMP/rounds"
if [ "$STALLCHECK" -gt 0 ]; then
	for n in $(seq "$STALLCHECK"); do round worker "$n"; done
	printf 'median worker=%.0f tasks/s\n' "$(median worker)"
	stalls worker
	exit 0
fi
for n in $(seq "$ROUNDS"); do
	round minimal "$n"
	round worker "$n"
	[ -z "${BASE:-}" ] || round base "$n"
	[ "${POLICIES:-0}" != 1 ] || round policies "$n"
done
mm=$(median minimal) mw=$(median worker)
printf 'median minimal=%.0f worker=%.0f tasks/s ratio worker/minimal=%.2f\n' "$mm" "$mw" "$(awk -v a="$mw" -v b="$mm" 'BEGIN {print (b>0) ? a/b : 0}')"
if [ -n "${BASE:-}" ]; then
	mb=$(median base)
	printf 'median base (%s)=%.0f tasks/s ratio base/minimal=%.2f\n' "$BASE" "$mb" "$(awk -v a="$mb" -v b="$mm" 'BEGIN {print (b>0) ? a/b : 0}')"
fi
if [ "${POLICIES:-0}" = 1 ]; then
	mp=$(median policies)
	printf 'median policies=%.0f tasks/s ratio policies/worker=%.2f\n' "$mp" "$(awk -v a="$mp" -v b="$mw" 'BEGIN {print (b>0) ? a/b : 0}')"
fi
stalls minimal
stalls worker
[ -z "${BASE:-}" ] || stalls base
[ "${POLICIES:-0}" != 1 ] || stalls policies
