package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// Observers are what watches the backends' calls: tracing, health and
// metrics. Nil fields observe nothing.
type Observers struct {
	Hook      resilience.AttemptHook
	OnBreaker func(backend string, from, to resilience.BreakerState)
	OnRetry   func(backend string)
	// Down, when set, tells routing whether backend b (named name) is
	// down by its health checks; it returns nil for a backend without
	// any.
	Down       func(name string, b config.Backend) func() (bool, time.Duration)
	Propagator propagation.TextMapPropagator
}

// Backends are a config's backends built as targets (shared by every
// route naming them) and the routes over them. Close it (or let a later
// Build carry its targets over and Release the rest) when done.
type Backends struct {
	// Router serves the config's routes.
	Router *resilience.Router
	// Targets by name: the config's backends and the "builtin:NAME"
	// references of routes.
	Targets map[string]resilience.Target
	built   map[string]*built
}

// built is one target and what it was made from; the same *built in two
// Backends is the same target, carried over.
type built struct {
	target   resilience.Target
	settings config.Backend
	close    func() // nil: nothing to release
}

// Build makes every backend of cfg and the routes over them. Backends of
// prev (nil at start) whose settings are unchanged are carried over with
// their breaker, rate limiter and connections; the caller then releases
// what prev has and the result does not (Backends.Release). On error what
// Build made is closed and prev is untouched.
//
// nc may be nil only to check a config (Check): NATS backends are then
// made unconnected and fail every call.
func Build(cfg *config.Config, nc *nats.Conn, log *slog.Logger, obs Observers, prev *Backends) (*Backends, error) {
	bk := &Backends{Targets: map[string]resilience.Target{}, built: map[string]*built{}}
	fail := func(err error) (*Backends, error) {
		bk.Release(prev)
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Backends)) {
		b := cfg.Backends[name]
		if old := prev.reusable(name, b); old != nil {
			bk.add(name, old)
			continue
		}
		be, closer, err := newBackend(name, b, nc, obs)
		if err != nil {
			return fail(fmt.Errorf("backend %s: %w", name, err))
		}
		bk.add(name, &built{target: resilience.NewTarget(name, be, policyOptions(name, b, log, obs)), settings: b, close: closer})
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
				if _, ok := bk.built[ref]; !ok {
					if old := prev.reusable(ref, config.Backend{}); old != nil {
						bk.add(ref, old)
					} else {
						h, err := handlers.Builtin(strings.TrimPrefix(ref, "builtin:"))
						if err != nil {
							return fail(fmt.Errorf("route %s: %w", typ, err))
						}
						bk.add(ref, &built{target: resilience.NewTarget(ref, h, resilience.PolicyOptions{Hook: obs.Hook})})
					}
				}
				add(bk.Targets[ref])
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
					add(bk.Targets[n])
				}
			default:
				t, ok := bk.Targets[ref]
				if !ok {
					return fail(fmt.Errorf("route %s: unknown backend %q", typ, ref))
				}
				add(t)
			}
		}
		strategy, err := resilience.NewStrategy(rc.Strategy, rc.Weights)
		if err != nil {
			return fail(fmt.Errorf("route %s: %w", typ, err))
		}
		rt.Strategy = strategy
		if v := rc.Validate; v != nil {
			if rt.Validate, err = resilience.NewValidator(v.JSONSchema, v.RequireJSON); err != nil {
				return fail(fmt.Errorf("route %s: %w", typ, err))
			}
		}
		routes = append(routes, rt)
	}
	bk.Router = resilience.NewRouter(routes)
	return bk, nil
}

func (bk *Backends) add(name string, b *built) {
	bk.built[name] = b
	bk.Targets[name] = b.target
}

// reusable returns prev's target name if it was built from the same
// settings; nil otherwise (or when prev is nil).
func (bk *Backends) reusable(name string, b config.Backend) *built {
	if bk == nil {
		return nil
	}
	if old, ok := bk.built[name]; ok && reflect.DeepEqual(old.settings, b) {
		return old
	}
	return nil
}

// Release closes the connections of bk's targets that next does not
// carry over (all of them when next is nil).
func (bk *Backends) Release(next *Backends) {
	if bk == nil {
		return
	}
	for name, b := range bk.built {
		if next != nil && next.built[name] == b {
			continue
		}
		if b.close != nil {
			b.close()
		}
	}
}

// Close releases every target's connections.
func (bk *Backends) Close() { bk.Release(nil) }

// Names are the targets' names, sorted (for health tracking).
func (bk *Backends) Names() []string { return slices.Sorted(maps.Keys(bk.built)) }

// diff names the backends of next that are new (added), carried over
// from bk (kept), and those of bk that next has not (removed).
func (bk *Backends) diff(next *Backends) (added, kept, removed []string) {
	for _, name := range next.Names() {
		if bk.built[name] == next.built[name] {
			kept = append(kept, name)
		} else {
			added = append(added, name)
		}
	}
	for _, name := range bk.Names() {
		if next.built[name] != bk.built[name] {
			if _, still := next.built[name]; !still {
				removed = append(removed, name)
			}
		}
	}
	return added, kept, removed
}

// newBackend makes the backend of one config entry, and what releases its
// connections (nil when it holds none of its own).
func newBackend(name string, b config.Backend, nc *nats.Conn, obs Observers) (handlers.Backend, func(), error) {
	switch b.Kind() {
	case config.KindHTTP:
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
			Propagator: obs.Propagator, ForwardHeaders: b.ForwardHeaders,
		})
		if err != nil {
			return nil, nil, err
		}
		return h, func() { _ = h.Close() }, nil
	case config.KindNATS:
		if nc == nil {
			// Check: nothing runs, and the subject was validated.
			return handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
				return nil, errors.New("not connected")
			}), nil, nil
		}
		n, err := handlers.NewNATS(handlers.NATSOptions{Name: name, Conn: nc, Subject: b.NATS.Subject,
			Propagator: obs.Propagator, ForwardHeaders: b.ForwardHeaders})
		if err != nil {
			return nil, nil, err
		}
		return n, nil, nil
	default:
		h, err := handlers.Builtin(b.Builtin)
		if err != nil {
			return nil, nil, err
		}
		return h, nil, nil
	}
}

// policyOptions translates a backend's policy keys; breaker transitions
// are logged and passed to the observers.
func policyOptions(name string, b config.Backend, log *slog.Logger, obs Observers) resilience.PolicyOptions {
	o := resilience.PolicyOptions{
		Timeout:        b.Timeout.D(),
		MaxConcurrency: b.MaxConcurrency.Limit,
		OnBreakerStateChanged: func(backend string, from, to resilience.BreakerState) {
			log.Warn("circuit breaker", "backend", backend, "from", from.String(), "to", to.String())
			if obs.OnBreaker != nil {
				obs.OnBreaker(backend, from, to)
			}
		},
		OnRetry: obs.OnRetry,
		Hook:    obs.Hook,
	}
	if obs.Down != nil {
		o.Down = obs.Down(name, b)
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

// cacheSettings are what the result cache is made with; a reload that
// keeps them keeps the cache and its entries.
type cacheSettings struct {
	policies map[string]cache.Policy
	maxTTL   time.Duration
	shared   bool
	sizeMB   int
}

func cacheSettingsOf(cfg *config.Config) cacheSettings {
	s := cacheSettings{policies: map[string]cache.Policy{}, sizeMB: cfg.Cache.MaxSizeMB}
	for typ, r := range cfg.Routes {
		if r.Cache == nil || r.Cache.TTL.D() <= 0 {
			continue
		}
		s.policies[typ] = cache.Policy{TTL: r.Cache.TTL.D(), KeyHeaders: r.Cache.KeyHeaders, Shared: r.Cache.Shared}
		s.maxTTL = max(s.maxTTL, r.Cache.TTL.D())
		s.shared = s.shared || r.Cache.Shared
	}
	return s
}

// sameCache reports whether a cache made for s serves t as well.
func (s cacheSettings) sameCache(t cacheSettings) bool {
	return s.maxTTL == t.maxTTL && s.shared == t.shared && s.sizeMB == t.sizeMB
}

// buildCache makes the result cache when a route asks for one, with the
// shared bucket when one asks for sharing; nil when none does.
func buildCache(ctx context.Context, s cacheSettings, js jetstream.JetStream, topo bus.Topology, log *slog.Logger) (*cache.Cache, error) {
	if len(s.policies) == 0 {
		return nil, nil
	}
	o := cache.Options{MaxSizeMB: s.sizeMB, MaxTTL: s.maxTTL, Logger: log}
	if s.shared {
		kv, err := cache.EnsureBucket(ctx, js, topo, s.maxTTL)
		if err != nil {
			return nil, err
		}
		o.KV = kv
	}
	return cache.New(ctx, o)
}
