package main

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"

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
		if p := unenforced(b); len(p) > 0 {
			log.Warn("backend policy keys are validated but not enforced yet in this release",
				"backend", name, "keys", strings.Join(p, ","))
		}
		targets[name] = resilience.Target{Name: name, Backend: be, Timeout: b.Timeout.D()}
	}

	var routes []*resilience.Route
	for _, typ := range slices.Sorted(maps.Keys(cfg.Routes)) {
		rc := cfg.Routes[typ]
		rt := &resilience.Route{Name: typ}
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
				add(resilience.Target{Name: ref, Backend: h})
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
		if rc.Strategy != "" && rc.Strategy != "failover" {
			log.Warn("route strategy is validated but not enforced yet in this release; using failover",
				"route", typ, "strategy", rc.Strategy)
		}
		routes = append(routes, rt)
	}
	return resilience.NewRouter(routes), closeAll, nil
}

// unenforced lists the policy keys of b that this release accepts but does
// not apply yet, so that the log says so instead of pretending.
func unenforced(b config.Backend) []string {
	var keys []string
	if b.Retry != nil {
		keys = append(keys, "retry")
	}
	if b.Breaker != nil {
		keys = append(keys, "breaker")
	}
	if b.MaxConcurrency > 0 {
		keys = append(keys, "max_concurrency")
	}
	if b.RateLimit != nil {
		keys = append(keys, "rate_limit")
	}
	return keys
}
