package config

import (
	"errors"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/task"
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	typeRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

var strategies = []string{"failover", "round_robin", "weighted", "least_latency"}

// validate checks the values that decoding cannot: ranges, references
// between sections and the combinations that make sense.
func (p *parser) validate(c *Config) {
	if c.Prefix != "" && !typeRE.MatchString(c.Prefix) {
		p.errorf([]string{"prefix"}, "must be subject tokens of A-Z a-z 0-9 _ -, got %q", c.Prefix)
	}
	p.validateNATS(c.NATS)
	if r := c.Streams.Replicas; r < 0 || r > 5 {
		p.errorf([]string{"streams", "replicas"}, "must be 1 to 5, got %d", r)
	}
	if d := c.Streams.ResultsMaxAge.D(); d < time.Second {
		p.errorf([]string{"streams", "results_max_age"}, "must be at least 1s, got %s", d)
	}
	if c.Streams.DLQMaxBytes < 0 {
		p.errorf([]string{"streams", "dlq_max_bytes"}, "must not be negative")
	}
	if n := c.Worker.Concurrency; n < 1 || n > 100000 {
		p.errorf([]string{"worker", "concurrency"}, "must be 1 to 100000, got %d", n)
	}
	if d := c.Worker.AckWait.D(); d < time.Second {
		p.errorf([]string{"worker", "ack_wait"}, "must be at least 1s, got %s", d)
	}
	if n := c.Worker.MaxDeliver; n < 1 {
		p.errorf([]string{"worker", "max_deliver"}, "must be at least 1, got %d", n)
	}
	if v := c.Health.SLATarget; v <= 0 || v > 100 {
		p.errorf([]string{"health", "sla_target"}, "must be a percentage in (0, 100], got %g", v)
	}
	if n := c.Cache.MaxSizeMB; n < 1 {
		p.errorf([]string{"cache", "max_size_mb"}, "must be at least 1, got %d", n)
	}

	tags := map[string]bool{}
	for _, name := range sortedKeys(c.Backends) {
		b := c.Backends[name]
		for _, t := range b.Tags {
			tags[t] = true
		}
		p.validateBackend(name, b)
	}
	for _, name := range sortedKeys(c.Routes) {
		r := c.Routes[name]
		p.validateRoute(c, name, &r, tags)
		c.Routes[name] = r
	}
}

func (p *parser) validateNATS(n NATS) {
	if n.URL != "" {
		for u := range strings.SplitSeq(n.URL, ",") {
			u = strings.TrimSpace(u)
			if !strings.Contains(u, "://") {
				u = "nats://" + u
			}
			pu, err := url.Parse(u)
			if err != nil || pu.Host == "" {
				p.errorf([]string{"nats", "url"}, "not a server URL: %q", u)
				continue
			}
			switch pu.Scheme {
			case "nats", "tls", "ws", "wss":
			default:
				p.errorf([]string{"nats", "url"}, "scheme must be nats, tls, ws or wss, got %q", pu.Scheme)
			}
		}
	}
	if (n.TLS.Cert == "") != (n.TLS.Key == "") {
		p.errorf([]string{"nats", "tls"}, "cert and key go together")
	}
	if n.Password != "" && n.User == "" {
		p.errorf([]string{"nats", "password"}, "needs nats.user")
	}
}

func (p *parser) validateBackend(name string, b Backend) {
	at := func(keys ...string) []string { return append([]string{"backends", name}, keys...) }
	if !nameRE.MatchString(name) {
		p.errorf(at(), "backend names are A-Z a-z 0-9 _ - (they name health subjects), got %q", name)
	}
	kinds := 0
	if b.HTTP != nil {
		kinds++
	}
	if b.NATS != nil {
		kinds++
	}
	if b.Builtin != "" {
		kinds++
	}
	if kinds != 1 {
		p.errorf(at(), "needs exactly one of http, nats or builtin, got %d", kinds)
	}
	if b.HTTP != nil {
		if err := httpURL(b.HTTP.URL); err != nil {
			p.errorf(at("http", "url"), "%v", err)
		}
		if b.HTTP.HealthURL != "" {
			if err := httpURL(b.HTTP.HealthURL); err != nil {
				p.errorf(at("http", "health_url"), "%v", err)
			}
		}
	}
	if b.NATS != nil && !task.ValidSubject(b.NATS.Subject) {
		p.errorf(at("nats", "subject"), "must be a subject without wildcards or spaces, got %q", b.NATS.Subject)
	}
	if b.Builtin != "" {
		if _, err := handlers.Builtin(b.Builtin); err != nil {
			p.errorf(at("builtin"), "unknown built-in %q (have %s)", b.Builtin, strings.Join(handlers.BuiltinNames(), ", "))
		}
	}
	if r := b.Retry; r != nil {
		if r.MaxAttempts < 1 {
			p.errorf(at("retry", "max_attempts"), "must be at least 1, got %d", r.MaxAttempts)
		}
		if r.MaxBackoff < r.Backoff {
			p.errorf(at("retry", "max_backoff"), "must be at least backoff (%s), got %s", r.Backoff, r.MaxBackoff)
		}
		if r.Jitter < 0 || r.Jitter > 1 {
			p.errorf(at("retry", "jitter"), "must be between 0 and 1, got %g", r.Jitter)
		}
	}
	if br := b.Breaker; br != nil {
		if br.FailureThreshold < 0 {
			p.errorf(at("breaker", "failure_threshold"), "must be at least 1, got %d", br.FailureThreshold)
		}
		if br.FailureRate < 0 || br.FailureRate > 1 {
			p.errorf(at("breaker", "failure_rate"), "must be in (0, 1], got %g", br.FailureRate)
		}
		if br.FailureRate > 0 && br.FailureThreshold > 0 {
			p.errorf(at("breaker", "failure_rate"), "set failure_threshold or failure_rate, not both")
		}
		if br.SuccessThreshold < 1 {
			p.errorf(at("breaker", "success_threshold"), "must be at least 1, got %d", br.SuccessThreshold)
		}
		if br.HalfOpenMaxCalls < 0 {
			p.errorf(at("breaker", "half_open_max_calls"), "must not be negative")
		}
	}
	if b.MaxConcurrency < 0 {
		p.errorf(at("max_concurrency"), "must not be negative, got %d", b.MaxConcurrency)
	}
	if a := b.Auth; a != nil && a.BearerTokenFile != "" && a.BearerTokenEnv != "" {
		p.errorf(at("auth"), "set bearer_token_file or bearer_token_env, not both")
	}
	for i, t := range b.Tags {
		if !nameRE.MatchString(t) {
			p.errorf(at("tags", index(i)), "tags are A-Z a-z 0-9 _ -, got %q", t)
		}
	}
}

func (p *parser) validateRoute(c *Config, name string, r *Route, tags map[string]bool) {
	at := func(keys ...string) []string { return append([]string{"routes", name}, keys...) }
	if !typeRE.MatchString(name) {
		p.errorf(at(), "a route is a task type: subject tokens of A-Z a-z 0-9 _ -, got %q", name)
	}
	if len(r.Backends) == 0 {
		p.errorf(at("backends"), "needs at least one backend")
	}
	seen := map[string]bool{}
	for i, ref := range r.Backends {
		if seen[ref] {
			p.errorf(at("backends", index(i)), "%q is listed twice", ref)
		}
		seen[ref] = true
		switch {
		case strings.HasPrefix(ref, "builtin:"):
			if _, err := handlers.Builtin(strings.TrimPrefix(ref, "builtin:")); err != nil {
				p.errorf(at("backends", index(i)), "unknown built-in %q (have %s)", ref, strings.Join(handlers.BuiltinNames(), ", "))
			}
		case strings.HasPrefix(ref, "tag:"):
			if !tags[strings.TrimPrefix(ref, "tag:")] {
				p.errorf(at("backends", index(i)), "no backend has tag %q", strings.TrimPrefix(ref, "tag:"))
			}
		default:
			if _, ok := c.Backends[ref]; !ok {
				p.errorf(at("backends", index(i)), "unknown backend %q (defined: %s)", ref, strings.Join(sortedKeys(c.Backends), ", "))
			}
		}
	}
	if !slices.Contains(strategies, r.Strategy) {
		p.errorf(at("strategy"), "must be one of %s, got %q", strings.Join(strategies, ", "), r.Strategy)
	}
	if r.Strategy == "weighted" && len(r.Weights) == 0 {
		p.errorf(at("weights"), "strategy weighted needs weights")
	}
	if len(r.Weights) > 0 && r.Strategy != "weighted" {
		p.errorf(at("weights"), "weights need strategy: weighted")
	}
	for _, k := range sortedKeys(r.Weights) {
		if !seen[k] {
			p.errorf(at("weights", k), "%q is not among the route's backends", k)
		}
		if r.Weights[k] <= 0 {
			p.errorf(at("weights", k), "must be greater than 0, got %d", r.Weights[k])
		}
	}
	if r.Cache != nil && r.Cache.TTL <= 0 {
		p.errorf(at("cache", "ttl"), "must be greater than 0")
	}
	if v := r.Validate; v != nil && v.JSONSchema != "" {
		path := v.JSONSchema
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(p.file), path)
		}
		if _, err := os.Stat(path); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			p.errorf(at("validate", "json_schema"), "%s: %v", path, err)
		}
		v.JSONSchema = path
	}
}

func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an absolute http:// or https:// URL, got " + quote(s))
	}
	return nil
}

func quote(s string) string { return strconv.Quote(s) }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
