package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// observers are what watches the backends' calls: tracing, health and
// metrics. Nil fields observe nothing.
type observers struct {
	hook       resilience.AttemptHook
	onBreaker  func(backend string, from, to circuitbreaker.State)
	onRetry    func(backend string)
	down       func(backend string) func() (bool, time.Duration)
	propagator propagation.TextMapPropagator
}

// backends are the configured backends' targets (shared by every route
// naming them) and the routes over them.
type backends struct {
	router  *resilience.Router
	targets map[string]resilience.Target
	close   func() // releases the backends' connections
}

// buildRouter makes every backend of cfg once and the routes over them.
func buildRouter(cfg *config.Config, nc *nats.Conn, log *slog.Logger, obs observers) (*backends, error) {
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
			var oauth *handlers.OAuth2Options
			if o := auth.OAuth2; o != nil {
				oauth = &handlers.OAuth2Options{TokenURL: o.TokenURL, ClientID: o.ClientID, ClientSecretFile: o.ClientSecretFile,
					ClientSecretEnv: o.ClientSecretEnv, Scopes: o.Scopes, EndpointParams: map[string][]string{}}
				for k, v := range o.EndpointParams {
					oauth.EndpointParams[k] = []string{v}
				}
			}
			h, err := handlers.NewHTTP(handlers.HTTPOptions{
				Name: name, URL: b.HTTP.URL, Headers: b.HTTP.Headers,
				BearerTokenFile: auth.BearerTokenFile, BearerTokenEnv: auth.BearerTokenEnv, OAuth2: oauth,
				Propagator: obs.propagator, ForwardHeaders: b.ForwardHeaders,
			})
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("backend %s: %w", name, err)
			}
			closers = append(closers, func() { _ = h.Close() })
			be = h
		case "nats":
			n, err := handlers.NewNATS(handlers.NATSOptions{Name: name, Conn: nc, Subject: b.NATS.Subject,
				Propagator: obs.propagator, ForwardHeaders: b.ForwardHeaders})
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("backend %s: %w", name, err)
			}
			be = n
		default:
			h, err := handlers.Builtin(b.Builtin)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("backend %s: %w", name, err)
			}
			be = h
		}
		targets[name] = resilience.NewTarget(name, be, policyOptions(name, b, log, obs))
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
					return nil, fmt.Errorf("route %s: %w", typ, err)
				}
				t := resilience.NewTarget(ref, h, resilience.PolicyOptions{Hook: obs.hook})
				targets[ref] = t
				add(t)
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
					return nil, fmt.Errorf("route %s: unknown backend %q", typ, ref)
				}
				add(t)
			}
		}
		strategy, err := resilience.NewStrategy(rc.Strategy, rc.Weights)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("route %s: %w", typ, err)
		}
		rt.Strategy = strategy
		if v := rc.Validate; v != nil {
			if rt.Validate, err = resilience.NewValidator(v.JSONSchema, v.RequireJSON); err != nil {
				closeAll()
				return nil, fmt.Errorf("route %s: %w", typ, err)
			}
		}
		routes = append(routes, rt)
	}
	return &backends{router: resilience.NewRouter(routes), targets: targets, close: closeAll}, nil
}

// policyOptions translates a backend's policy keys; breaker transitions
// are logged and passed to the observers.
func policyOptions(name string, b config.Backend, log *slog.Logger, obs observers) resilience.PolicyOptions {
	o := resilience.PolicyOptions{
		Timeout:        b.Timeout.D(),
		MaxConcurrency: b.MaxConcurrency.Limit,
		OnBreakerStateChanged: func(backend string, from, to circuitbreaker.State) {
			log.Warn("circuit breaker", "backend", backend, "from", from.String(), "to", to.String())
			if obs.onBreaker != nil {
				obs.onBreaker(backend, from, to)
			}
		},
		OnRetry: obs.onRetry,
		Hook:    obs.hook,
	}
	if obs.down != nil {
		o.Down = obs.down(name)
	}
	if r := b.Retry; r != nil {
		o.Retry = &resilience.RetryOptions{MaxAttempts: r.MaxAttempts, Backoff: r.Backoff.D(), MaxBackoff: r.MaxBackoff.D(), Jitter: r.Jitter, Budget: r.Budget}
	}
	if a := b.MaxConcurrency.Adaptive; a != nil {
		o.Adaptive = &resilience.AdaptiveOptions{Min: a.Min, Max: a.Max, Initial: a.Initial,
			OnLimitChanged: func(backend string, from, to int) {
				log.Debug("concurrency limit", "backend", backend, "from", from, "to", to)
			}}
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

// buildCache makes the result cache when a route asks for one, with the
// shared bucket when one asks for sharing; nil when none does.
func buildCache(ctx context.Context, cfg *config.Config, js jetstream.JetStream, topo bus.Topology, log *slog.Logger) (*cache.Cache, map[string]cache.Policy, error) {
	policies := map[string]cache.Policy{}
	var maxTTL time.Duration
	shared := false
	for typ, r := range cfg.Routes {
		if r.Cache == nil || r.Cache.TTL.D() <= 0 {
			continue
		}
		policies[typ] = cache.Policy{TTL: r.Cache.TTL.D(), KeyHeaders: r.Cache.KeyHeaders, Shared: r.Cache.Shared}
		maxTTL = max(maxTTL, r.Cache.TTL.D())
		shared = shared || r.Cache.Shared
	}
	if len(policies) == 0 {
		return nil, nil, nil
	}
	o := cache.Options{MaxSizeMB: cfg.Cache.MaxSizeMB, MaxTTL: maxTTL, Logger: log}
	if shared {
		kv, err := cache.EnsureBucket(ctx, js, topo, maxTTL)
		if err != nil {
			return nil, nil, err
		}
		o.KV = kv
	}
	c, err := cache.New(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	return c, policies, nil
}
