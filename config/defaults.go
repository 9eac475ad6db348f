package config

import (
	"time"

	"github.com/breakwater/breakwater/handlers"
)

// The defaults, in one place; docs/config.md repeats this table. A default
// fills a key only when the file leaves it out (or sets it to null): a key
// that is written is validated as written, zero included.
//
//	key                              default
//	streams.replicas                 unset: 1 when the worker creates a stream; an existing stream keeps its own
//	streams.results_max_age          1h
//	streams.dlq_max_bytes            0 (unlimited)
//	worker.concurrency               64
//	worker.ack_wait                  30s
//	worker.max_deliver               5
//	worker.max_payload               0 (the server's limit)
//	worker.reply_subjects            ["_INBOX.>"]
//	health.interval                  10s
//	health.sla_target                99.9 (percent)
//	health.breaker_open_alert_after  1m
//	cache.max_size_mb                64
//	dlq.redact_headers               none (the built-in list always applies)
//	backends.*.timeout               30s
//	backends.*.retry                 none; when present: max_attempts 3, backoff 100ms, max_backoff 30s, jitter 0.2,
//	                                 budget 0 (none)
//	backends.*.breaker               none; when present: failure_threshold 3 unless failure_rate is set,
//	                                 then min_calls 10 and period 1m; delay 10s; success_threshold 1
//	backends.*.max_concurrency       0 (unbounded); adaptive: min 1, max 200, initial 20 (kept within min and max)
//	backends.*.rate_limit            none (unlimited)
//	backends.*.forward_headers       none (trace context and Content-Type only)
//	routes.*.strategy                failover
//	routes.*.deadline, hedge_after   0 (none)
const (
	DefaultResultsMaxAge    = time.Hour
	DefaultConcurrency      = 64
	DefaultAckWait          = 30 * time.Second
	DefaultMaxDeliver       = 5
	DefaultReplySubject     = "_INBOX.>" // worker.reply_subjects is [DefaultReplySubject]
	DefaultHealthInterval   = 10 * time.Second
	DefaultSLATarget        = 99.9
	DefaultBreakerOpenAlert = time.Minute
	DefaultCacheMaxSizeMB   = 64
	DefaultBackendTimeout   = 30 * time.Second
	DefaultRetryMaxAttempts = 3
	DefaultRetryBackoff     = 100 * time.Millisecond
	DefaultRetryMaxBackoff  = 30 * time.Second
	DefaultRetryJitter      = 0.2
	DefaultBreakerFailures  = 3
	DefaultBreakerMinCalls  = 10
	DefaultBreakerPeriod    = time.Minute
	DefaultBreakerDelay     = 10 * time.Second
	DefaultBreakerSuccesses = 1
	DefaultAdaptiveMin      = 1
	DefaultAdaptiveMax      = 200
	DefaultAdaptiveInitial  = 20
	DefaultStrategy         = "failover"
)

// Default is the configuration of a worker started without a file: no
// backends, every built-in handler on the route of its own name (route
// "echo" → backend "builtin:echo"), and every default above.
func Default() *Config {
	c := &Config{Routes: map[string]Route{}}
	for _, name := range handlers.DefaultBuiltinNames() {
		c.Routes[name] = Route{Backends: []string{"builtin:" + name}}
	}
	c.applyDefaults(func(...string) bool { return false })
	return c
}

// applyDefaults fills every key the file leaves out with its default. has
// reports whether the file sets a key path (to something other than null):
// a key that is set keeps its value, even zero, for validate to check, so
// that "max_attempts: 0" is an error and "jitter: 0" means no jitter rather
// than being silently replaced.
func (c *Config) applyDefaults(has func(path ...string) bool) {
	setDur := func(p *Duration, v time.Duration, path ...string) {
		if !has(path...) {
			*p = Duration(v)
		}
	}
	setInt := func(p *int, v int, path ...string) {
		if !has(path...) {
			*p = v
		}
	}
	// streams.replicas stays 0 when unset: the stream keeps the replicas an
	// operator gave it, and is created with 1.
	setDur(&c.Streams.ResultsMaxAge, DefaultResultsMaxAge, "streams", "results_max_age")
	setInt(&c.Worker.Concurrency, DefaultConcurrency, "worker", "concurrency")
	setDur(&c.Worker.AckWait, DefaultAckWait, "worker", "ack_wait")
	setInt(&c.Worker.MaxDeliver, DefaultMaxDeliver, "worker", "max_deliver")
	// An empty list that is written stays empty: it answers no reply subject.
	if !has("worker", "reply_subjects") {
		c.Worker.ReplySubjects = []string{DefaultReplySubject}
	}
	setDur(&c.Health.Interval, DefaultHealthInterval, "health", "interval")
	if !has("health", "sla_target") {
		c.Health.SLATarget = DefaultSLATarget
	}
	setDur(&c.Health.BreakerOpenAlertAfter, DefaultBreakerOpenAlert, "health", "breaker_open_alert_after")
	setInt(&c.Cache.MaxSizeMB, DefaultCacheMaxSizeMB, "cache", "max_size_mb")
	for name, b := range c.Backends {
		at := func(keys ...string) []string { return append([]string{"backends", name}, keys...) }
		setDur(&b.Timeout, DefaultBackendTimeout, at("timeout")...)
		if a := b.MaxConcurrency.Adaptive; a != nil {
			// A copy: YAML anchors may share one value between backends.
			c := *a
			ad := func(k string) []string { return at("max_concurrency", "adaptive", k) }
			setInt(&c.Min, DefaultAdaptiveMin, ad("min")...)
			setInt(&c.Max, max(DefaultAdaptiveMax, c.Min), ad("max")...)
			setInt(&c.Initial, min(max(DefaultAdaptiveInitial, c.Min), c.Max), ad("initial")...)
			b.MaxConcurrency.Adaptive = &c
		}
		if r := b.Retry; r != nil {
			setInt(&r.MaxAttempts, DefaultRetryMaxAttempts, at("retry", "max_attempts")...)
			setDur(&r.Backoff, DefaultRetryBackoff, at("retry", "backoff")...)
			setDur(&r.MaxBackoff, DefaultRetryMaxBackoff, at("retry", "max_backoff")...)
			if !has(at("retry", "jitter")...) {
				r.Jitter = DefaultRetryJitter
			}
		}
		if br := b.Breaker; br != nil {
			if has(at("breaker", "failure_rate")...) {
				setInt(&br.MinCalls, DefaultBreakerMinCalls, at("breaker", "min_calls")...)
				setDur(&br.Period, DefaultBreakerPeriod, at("breaker", "period")...)
			} else {
				setInt(&br.FailureThreshold, DefaultBreakerFailures, at("breaker", "failure_threshold")...)
			}
			setDur(&br.Delay, DefaultBreakerDelay, at("breaker", "delay")...)
			setInt(&br.SuccessThreshold, DefaultBreakerSuccesses, at("breaker", "success_threshold")...)
		}
		c.Backends[name] = b
	}
	for name, r := range c.Routes {
		if !has("routes", name, "strategy") {
			r.Strategy = DefaultStrategy
		}
		c.Routes[name] = r
	}
}
