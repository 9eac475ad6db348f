package config

import (
	"time"

	"github.com/breakwater/breakwater/handlers"
)

// Defaults, in one place (docs/config.md repeats this table):
//
//	streams.replicas               1 on create; unset keeps an existing stream's
//	streams.results_max_age        1h
//	streams.dlq_max_bytes          0 (unlimited)
//	worker.concurrency             64
//	worker.ack_wait                30s
//	worker.max_deliver             5
//	worker.max_payload             0 (the server's limit)
//	health.interval                10s
//	health.sla_target              99.9
//	health.breaker_open_alert_after 1m
//	cache.max_size_mb              64
//	backends.*.timeout             30s
//	backends.*.retry               max_attempts 3, backoff 100ms, max_backoff 30s, jitter 0.2
//	backends.*.breaker             failure_threshold 3 (or failure_rate with min_calls 10 over period 1m),
//	                               delay 10s, success_threshold 1
//	routes.*.strategy              failover
const (
	DefaultReplicas         = 1
	DefaultResultsMaxAge    = time.Hour
	DefaultConcurrency      = 64
	DefaultAckWait          = 30 * time.Second
	DefaultMaxDeliver       = 5
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
	DefaultStrategy         = "failover"
)

// Default is the configuration of a worker started without a file: every
// built-in handler on the route of its own name, and every default.
func Default() *Config {
	c := &Config{Routes: map[string]Route{}}
	for _, name := range handlers.BuiltinNames() {
		c.Routes[name] = Route{Backends: []string{"builtin:" + name}}
	}
	c.applyDefaults()
	return c
}

// applyDefaults fills every unset field with its default.
func (c *Config) applyDefaults() {
	setDur(&c.Streams.ResultsMaxAge, DefaultResultsMaxAge)
	setInt(&c.Worker.Concurrency, DefaultConcurrency)
	setDur(&c.Worker.AckWait, DefaultAckWait)
	setInt(&c.Worker.MaxDeliver, DefaultMaxDeliver)
	setDur(&c.Health.Interval, DefaultHealthInterval)
	if c.Health.SLATarget == 0 {
		c.Health.SLATarget = DefaultSLATarget
	}
	setDur(&c.Health.BreakerOpenAlertAfter, DefaultBreakerOpenAlert)
	setInt(&c.Cache.MaxSizeMB, DefaultCacheMaxSizeMB)
	for name, b := range c.Backends {
		setDur(&b.Timeout, DefaultBackendTimeout)
		if r := b.Retry; r != nil {
			setInt(&r.MaxAttempts, DefaultRetryMaxAttempts)
			setDur(&r.Backoff, DefaultRetryBackoff)
			setDur(&r.MaxBackoff, DefaultRetryMaxBackoff)
			if r.Jitter == 0 {
				r.Jitter = DefaultRetryJitter
			}
		}
		if br := b.Breaker; br != nil {
			if br.FailureRate > 0 {
				setInt(&br.MinCalls, DefaultBreakerMinCalls)
				setDur(&br.Period, DefaultBreakerPeriod)
			} else {
				setInt(&br.FailureThreshold, DefaultBreakerFailures)
			}
			setDur(&br.Delay, DefaultBreakerDelay)
			setInt(&br.SuccessThreshold, DefaultBreakerSuccesses)
		}
		c.Backends[name] = b
	}
	for name, r := range c.Routes {
		if r.Strategy == "" {
			r.Strategy = DefaultStrategy
		}
		c.Routes[name] = r
	}
}

// setInt and setDur fill zero values only, so that an explicit 0 in the
// file is caught by validation rather than silently replaced. Fields are
// checked for presence in the file by validate before defaults apply.
func setInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

func setDur(p *Duration, v time.Duration) {
	if *p == 0 {
		*p = Duration(v)
	}
}
