package main

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// buildRouter makes every backend of cfg once and the routes over them.
// close releases the backends' connections.
func buildRouter(cfg *config.Config, nc *nats.Conn, log *slog.Logger) (*resilience.Router, func(), error) {
	targets := map[string]resilience.Target{}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Backends)) {
		b := cfg.Backends[name]
		var be handlers.Backend
		switch b.Kind() {
		case "http":
			auth := config.Auth{}
			if b.Auth != nil {
				auth = *b.Auth
			}
			h, err := handlers.NewHTTP(handlers.HTTPOptions{
				Name: name, URL: b.HTTP.URL, Headers: b.HTTP.Headers,
				BearerTokenFile: auth.BearerTokenFile, BearerTokenEnv: auth.BearerTokenEnv,
			})
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("backend %s: %w", name, err)
			}
			closers = append(closers, func() { _ = h.Close() })
			be = h
		case "nats":
			n, err := handlers.NewNATS(handlers.NATSOptions{Name: name, Conn: nc, Subject: b.NATS.Subject})
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("backend %s: %w", name, err)
			}
			be = n
		default:
			h, err := handlers.Builtin(b.Builtin)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("backend %s: %w", name, err)
			}
			be = h
		}
		targets[name] = resilience.NewTarget(name, be, policyOptions(b, log))
	}

	var routes []*resilience.Route
	for _, typ := range slices.Sorted(maps.Keys(cfg.Routes)) {
		rc := cfg.Routes[typ]
		rt := &resilience.Route{Name: typ, Deadline: rc.Deadline.D(), HedgeAfter: rc.HedgeAfter.D()}
		seen := map[string]bool{}
		add := func(t resilience.Target) {
			if !seen[t.Name] {
				seen[t.Name] = true
				rt.Targets = append(rt.Targets, t)
			}
		}
		for _, ref := range rc.Backends {
			switch {
			case strings.HasPrefix(ref, "builtin:"):
				name := strings.TrimPrefix(ref, "builtin:")
				h, err := handlers.Builtin(name)
				if err != nil {
					closeAll()
					return nil, nil, fmt.Errorf("route %s: %w", typ, err)
				}
				add(resilience.NewTarget(ref, h, resilience.PolicyOptions{}))
			case strings.HasPrefix(ref, "tag:"):
				tag := strings.TrimPrefix(ref, "tag:")
				var names []string
				for name, b := range cfg.Backends {
					if slices.Contains(b.Tags, tag) {
						names = append(names, name)
					}
				}
				sort.Strings(names)
				for _, n := range names {
					add(targets[n])
				}
			default:
				t, ok := targets[ref]
				if !ok {
					closeAll()
					return nil, nil, fmt.Errorf("route %s: unknown backend %q", typ, ref)
				}
				add(t)
			}
		}
		strategy, err := resilience.NewStrategy(rc.Strategy, rc.Weights)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("route %s: %w", typ, err)
		}
		rt.Strategy = strategy
		if v := rc.Validate; v != nil {
			if rt.Validate, err = resilience.NewValidator(v.JSONSchema, v.RequireJSON); err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("route %s: %w", typ, err)
			}
		}
		routes = append(routes, rt)
	}
	return resilience.NewRouter(routes), closeAll, nil
}

// policyOptions translates a backend's policy keys; breaker transitions
// are logged (health events will publish them too).
func policyOptions(b config.Backend, log *slog.Logger) resilience.PolicyOptions {
	o := resilience.PolicyOptions{
		Timeout:        b.Timeout.D(),
		MaxConcurrency: b.MaxConcurrency,
		OnBreakerStateChanged: func(backend string, from, to circuitbreaker.State) {
			log.Warn("circuit breaker", "backend", backend, "from", from.String(), "to", to.String())
		},
	}
	if r := b.Retry; r != nil {
		o.Retry = &resilience.RetryOptions{MaxAttempts: r.MaxAttempts, Backoff: r.Backoff.D(), MaxBackoff: r.MaxBackoff.D(), Jitter: r.Jitter}
	}
	if br := b.Breaker; br != nil {
		o.Breaker = &resilience.BreakerOptions{
			FailureThreshold: br.FailureThreshold, FailureRate: br.FailureRate, MinCalls: br.MinCalls,
			Period: br.Period.D(), Delay: br.Delay.D(), SuccessThreshold: br.SuccessThreshold,
			HalfOpenMaxCalls: br.HalfOpenMaxCalls,
		}
	}
	if rl := b.RateLimit; rl != nil {
		o.RateN, o.RatePer = rl.N, rl.Per
	}
	return o
}
