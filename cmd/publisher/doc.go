// Command publisher is Breakwater's client tool: it publishes tasks to the
// TASKS stream (one, or many from a JSON Lines file), waits for a task's
// result, streams or fetches results from the RESULTS stream, and generates
// load with latency percentiles. It parses flags and prints: the work is
// done by package client (which Go programs use the same way) and, for
// bench, package loadgen.
//
// Usage:
//
//	publisher [global flags] COMMAND [flags] [args]
//
// Commands:
//
//	publish TYPE [DATA | @FILE | -] [--id ID] [--header K=V]... [--wait]
//	publish --file FILE|-
//	results [TYPE] [--all] [--json]
//	result TYPE ID [--headers]
//	bench [--type T] [--count N] [--concurrency C] [--size B] [--rate R] [--warmup W] [--json]
//
// Global flags may stand before or after the command: --nats-url (else
// NATS_URL, else nats://127.0.0.1:4222), --creds, --user, --password,
// --token, --tls-ca, --tls-cert, --tls-key, --prefix (else
// BREAKWATER_PREFIX) and --timeout.
//
// Exit codes: 0 success, 1 a runtime failure (the server, a failed task, a
// missing result), 2 a usage error. Every failure is one line on standard
// error starting with "publisher: ".
package main
