// Package service assembles and runs a Breakwater worker from its config:
// the NATS connection (or an embedded server), the streams, the backends
// with their policies, the routes over them, the result cache, the health
// monitor, the admin plane and the HTTP probes. cmd/worker parses flags
// and calls Run; everything the worker is made of is built here.
//
// Build is the one function that turns a config's backends and routes
// into targets and a router, at start and on every reload: a reload
// (Options.Reload, SIGHUP in cmd/worker) parses and validates the whole
// file first, and only a good file replaces the routes, backends,
// policies, cache policies, health settings and reply subjects, for the
// tasks that start after it. A backend whose settings did not change is
// carried over as it is (breaker state, rate limiter, connection pool);
// one removed is closed once the tasks that were using it are done.
// Settings that need a restart (nats, streams, prefix, worker sizing,
// dlq, health.interval) are named in the log and left as they were.
package service
