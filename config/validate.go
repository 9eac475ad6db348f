package config

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/task"
)

var (
	// nameRE is a backend name or tag: one subject token, as backend names
	// become health.backend.<name>.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// typeRE is a task type: one or more tokens separated by dots.
	typeRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	// headerRE is an HTTP header name (an RFC 9110 token).
	headerRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
	// envNameRE is an environment variable name.
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Strategies are the values of routes.*.strategy.
var strategies = []string{"failover", "round_robin", "weighted", "least_latency"}

// validate checks what decoding cannot: ranges, references between
// sections and the combinations that make sense. It runs after the
// defaults, so a value it sees is either written in the file or a default.
func (p *parser) validate(c *Config) {
	// One token: the prefix also names the streams (<prefix>_TASKS), and a
	// stream name cannot hold a dot.
	if c.Prefix != "" && !nameRE.MatchString(c.Prefix) {
		p.errorf([]string{"prefix"}, "must be one subject token of A-Z a-z 0-9 _ - (it names streams too), got %q", c.Prefix)
	}
	p.validateNATS(c.NATS)

	if r := c.Streams.Replicas; r < 0 || r > 5 || (r == 0 && p.has("streams", "replicas")) {
		p.errorf([]string{"streams", "replicas"}, "must be 1 to 5, got %d", r)
	}
	if d := c.Streams.ResultsMaxAge.D(); d < time.Second {
		p.errorf([]string{"streams", "results_max_age"}, "must be at least 1s, got %s", d)
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
	p.validateList([]string{"worker", "reply_subjects"}, c.Worker.ReplySubjects, true, subjectPatternProblem)
	p.validateList([]string{"dlq", "redact_headers"}, c.DLQ.RedactHeaders, false, headerPatternProblem)
	if d := c.Health.Interval.D(); d <= 0 {
		p.errorf([]string{"health", "interval"}, "must be greater than 0, got %s", d)
	}
	if v := c.Health.SLATarget; !(v > 0 && v <= 100) {
		p.errorf([]string{"health", "sla_target"}, "must be a percentage above 0 and at most 100, got %g", v)
	}
	if d := c.Health.BreakerOpenAlertAfter.D(); d <= 0 {
		p.errorf([]string{"health", "breaker_open_alert_after"}, "must be greater than 0, got %s", d)
	}
	if n := c.Cache.MaxSizeMB; n < 1 {
		p.errorf([]string{"cache", "max_size_mb"}, "must be at least 1, got %d", n)
	}

	known := known{backends: sortedKeys(c.Backends), builtins: handlers.BuiltinNames(), tags: map[string]bool{}}
	for _, name := range known.backends {
		b := c.Backends[name]
		for _, t := range b.Tags {
			known.tags[t] = true
		}
		p.validateBackend(name, b, known)
	}
	known.tagList = sortedKeys(known.tags)
	for _, name := range sortedKeys(c.Routes) {
		r := c.Routes[name]
		p.validateRoute(c, name, &r, known)
		c.Routes[name] = r
	}
}

// known is what route entries may name, sorted, for checks and messages.
type known struct {
	backends []string
	builtins []string
	tags     map[string]bool
	tagList  []string
}

func (p *parser) validateNATS(n NATS) {
	if n.URL != "" {
		for _, u := range strings.Split(n.URL, ",") {
			if err := natsURL(strings.TrimSpace(u)); err != "" {
				p.errorf([]string{"nats", "url"}, "%s", err)
			}
		}
	}
	if n.TLS.Cert != "" && n.TLS.Key == "" {
		p.errorf([]string{"nats", "tls", "cert"}, "needs nats.tls.key")
	}
	if n.TLS.Key != "" && n.TLS.Cert == "" {
		p.errorf([]string{"nats", "tls", "key"}, "needs nats.tls.cert")
	}
	if n.Password != "" && n.User == "" {
		p.errorf([]string{"nats", "password"}, "needs nats.user")
	}
}

// natsURL checks one server of nats.url: nats://, tls://, ws:// or wss://,
// or host:port. It returns the reason it is wrong, or "".
func natsURL(s string) string {
	if s == "" {
		return "empty server in the list"
	}
	u := s
	if !strings.Contains(u, "://") {
		u = "nats://" + u
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" || pu.Hostname() == "" {
		return "want a server URL like nats://host:4222 or host:4222, got " + quote(bus.RedactURL(s))
	}
	switch pu.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return "scheme must be nats, tls, ws or wss, got " + quote(bus.RedactURL(s))
	}
	return ""
}

func (p *parser) validateBackend(name string, b Backend, known known) {
	at := func(keys ...string) []string { return append([]string{"backends", name}, keys...) }
	switch {
	case name == "":
		p.errorf(at(), "a backend name must not be empty")
	case strings.HasPrefix(name, "builtin:") || strings.HasPrefix(name, "tag:"):
		p.errorf(at(), "a backend name must not start with builtin: or tag: (route entries use those prefixes), got %q", name)
	case !nameRE.MatchString(name):
		p.errorf(at(), "a backend name is A-Z a-z 0-9 _ - (it names the subject health.backend.<name>), got %q", name)
	}
	var kinds []string
	if b.HTTP != nil {
		kinds = append(kinds, "http")
	}
	if b.NATS != nil {
		kinds = append(kinds, "nats")
	}
	if b.Builtin != "" {
		kinds = append(kinds, "builtin")
	}
	switch len(kinds) {
	case 0:
		p.errorf(at(), "needs one of http, nats or builtin")
	case 1:
	default:
		p.errorf(at(), "needs exactly one of http, nats or builtin, got %s", strings.Join(kinds, " and "))
	}
	if h := b.HTTP; h != nil {
		if reason := httpURL(h.URL); reason != "" {
			p.errorf(at("http", "url"), "%s", reason)
		}
		if h.HealthURL != "" {
			if reason := httpURL(h.HealthURL); reason != "" {
				p.errorf(at("http", "health_url"), "%s", reason)
			}
		}
		for _, k := range sortedKeys(h.Headers) {
			if !headerRE.MatchString(k) {
				p.errorf(at("http", "headers", k), "not a valid header name: %q", k)
			}
			if strings.ContainsAny(h.Headers[k], "\r\n\x00") {
				p.errorf(at("http", "headers", k), "a header value must not contain line breaks")
			}
		}
	}
	if b.NATS != nil && b.NATS.Subject == "" {
		p.errorf(at("nats", "subject"), "is required: the subject the backend's service answers on")
	} else if b.NATS != nil && !task.ValidSubject(b.NATS.Subject) {
		p.errorf(at("nats", "subject"), "must be a subject without wildcards, spaces or empty tokens, got %q", b.NATS.Subject)
	}
	if b.Builtin != "" {
		if _, err := handlers.Builtin(b.Builtin); err != nil {
			p.errorf(at("builtin"), "unknown built-in %q%s (have %s)", b.Builtin, didYouMean(b.Builtin, known.builtins), strings.Join(known.builtins, ", "))
		}
	}
	if b.Timeout <= 0 {
		p.errorf(at("timeout"), "must be greater than 0, got %s", b.Timeout)
	}
	if r := b.Retry; r != nil {
		if r.MaxAttempts < 1 {
			p.errorf(at("retry", "max_attempts"), "must be at least 1, got %d", r.MaxAttempts)
		}
		if r.Backoff <= 0 {
			p.errorf(at("retry", "backoff"), "must be greater than 0, got %s", r.Backoff)
		}
		if r.MaxBackoff < r.Backoff {
			p.errorf(at("retry", "max_backoff"), "must be at least retry.backoff (%s), got %s", r.Backoff, r.MaxBackoff)
		}
		if !(r.Jitter >= 0 && r.Jitter <= 1) {
			p.errorf(at("retry", "jitter"), "must be between 0 and 1, got %g", r.Jitter)
		}
		if !(r.Budget >= 0 && r.Budget <= 1) {
			p.errorf(at("retry", "budget"), "must be a share of the calls between 0 (no budget) and 1, got %g", r.Budget)
		}
	}
	if br := b.Breaker; br != nil {
		p.validateBreaker(at, br)
	}
	p.validateConcurrency(at, b.MaxConcurrency)
	if a := b.Auth; a != nil && a.BearerTokenFile != "" && a.BearerTokenEnv != "" {
		p.errorf(at("auth"), "set bearer_token_file or bearer_token_env, not both")
	}
	if a := b.Auth; a != nil && a.OAuth2 != nil {
		p.validateOAuth2(at, b, a)
	}
	for i, t := range b.Tags {
		if !nameRE.MatchString(t) {
			p.errorf(at("tags", index(i)), "a tag is A-Z a-z 0-9 _ -, got %q", t)
		}
	}
	p.validateList(at("forward_headers"), b.ForwardHeaders, false, func(s string) string {
		if err := handlers.CheckForwardHeader(s); err != nil {
			// The path already says what the entry is.
			return strings.TrimPrefix(err.Error(), handlers.ErrInvalidHeaderPattern.Error()+": ")
		}
		return ""
	})
}

// maxConcurrency bounds max_concurrency, fixed or adaptive.
const maxConcurrency = 100000

func (p *parser) validateConcurrency(at func(...string) []string, c Concurrency) {
	a := c.Adaptive
	if a == nil {
		if c.Limit < 0 {
			p.errorf(at("max_concurrency"), "must be 0 (unbounded) or more, got %d", c.Limit)
		} else if c.Limit > maxConcurrency {
			p.errorf(at("max_concurrency"), "must be at most %d, got %d", maxConcurrency, c.Limit)
		}
		return
	}
	key := func(k string) []string { return at("max_concurrency", "adaptive", k) }
	switch {
	case a.Min < 1:
		p.errorf(key("min"), "must be at least 1, got %d", a.Min)
	case a.Max < a.Min || a.Max > maxConcurrency:
		p.errorf(key("max"), "must be at least min (%d) and at most %d, got %d", a.Min, maxConcurrency, a.Max)
	case a.Initial < a.Min || a.Initial > a.Max:
		p.errorf(key("initial"), "must be between min (%d) and max (%d), got %d", a.Min, a.Max, a.Initial)
	}
}

// oauth2Reserved are the token request's parameters endpoint_params may
// not set: the grant sets them.
var oauth2Reserved = []string{"client_id", "client_secret", "grant_type", "scope"}

func (p *parser) validateOAuth2(at func(...string) []string, b Backend, a *Auth) {
	o := a.OAuth2
	key := func(k ...string) []string { return at(append([]string{"auth", "oauth2"}, k...)...) }
	if b.HTTP == nil {
		p.errorf(key(), "needs an http backend (it sends the token as an HTTP header)")
	}
	if a.BearerTokenFile != "" || a.BearerTokenEnv != "" {
		p.errorf(key(), "set a bearer token or oauth2, not both")
	}
	if reason := httpURL(o.TokenURL); reason != "" {
		p.errorf(key("token_url"), "%s", strings.Replace(reason, "is required", "is required: the token endpoint,", 1))
	}
	if o.ClientID == "" {
		p.errorf(key("client_id"), "is required")
	}
	switch {
	case o.ClientSecretFile != "" && o.ClientSecretEnv != "":
		p.errorf(key("client_secret_file"), "set client_secret_file or client_secret_env, not both")
	case o.ClientSecretFile == "" && o.ClientSecretEnv == "":
		p.errorf(key(), "needs client_secret_file or client_secret_env")
	case o.ClientSecretFile != "":
		path := o.ClientSecretFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(p.file), path)
		}
		// Read now, so that a worker never starts unable to authenticate;
		// what it holds must never reach a message.
		switch raw, err := os.ReadFile(path); {
		case err != nil:
			p.errorf(key("client_secret_file"), "cannot read %s: %v", path, errorsUnwrapPath(err))
		case strings.TrimSpace(string(raw)) == "":
			p.errorf(key("client_secret_file"), "%s is empty", path)
		}
		o.ClientSecretFile = path
	case !envNameRE.MatchString(o.ClientSecretEnv):
		p.errorf(key("client_secret_env"), "want an environment variable name, got %q", o.ClientSecretEnv)
	}
	for i, s := range o.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			p.errorf(key("scopes", index(i)), "a scope is one token without spaces or quotes, got %q", s)
		}
	}
	for _, k := range sortedKeys(o.EndpointParams) {
		if slices.Contains(oauth2Reserved, k) {
			p.errorf(key("endpoint_params", k), "is set by the grant (%s); use the oauth2 keys instead", strings.Join(oauth2Reserved, ", "))
		}
	}
}

// validateList checks every entry of a list of subjects or header
// patterns with problem (the reason an entry is wrong, or ""), and that
// none is listed twice (compared regardless of case unless caseSensitive:
// header names are case-insensitive, subjects are not).
func (p *parser) validateList(path []string, list []string, caseSensitive bool, problem func(string) string) {
	seen := make(map[string]bool, len(list))
	for i, s := range list {
		at := append(slices.Clone(path), index(i))
		if reason := problem(s); reason != "" {
			p.errorf(at, "%s", reason)
			continue
		}
		key := s
		if !caseSensitive {
			key = strings.ToLower(s)
		}
		if seen[key] {
			p.errorf(at, "%q is listed twice", s)
		}
		seen[key] = true
	}
}

// maxSubject bounds a reply subject pattern, as task.ValidSubject bounds
// a subject.
const maxSubject = 4096

// subjectPatternProblem checks a subject or a NATS wildcard pattern ("*"
// for one token, ">" for the rest, each a whole token) and returns the
// reason it is wrong, or "". Only the syntax is checked: which subjects
// may never be answered is the worker's rule, applied to every task.
func subjectPatternProblem(s string) string {
	switch {
	case s == "":
		return "empty subject"
	case len(s) > maxSubject:
		return fmt.Sprintf("a subject is at most %d bytes, got %d", maxSubject, len(s))
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Sprintf("a subject must not contain spaces or control characters, got %q", s)
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return fmt.Sprintf("empty token (a leading, trailing or double dot) in %q", s)
		case tok == ">" && i != len(toks)-1:
			return fmt.Sprintf("> matches the rest of a subject and must be its last token, got %q", s)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			return fmt.Sprintf("* and > are wildcards only as a whole token, got %q in %q", tok, s)
		}
	}
	return ""
}

// headerPatternProblem checks a header name or "*" pattern and returns the
// reason it is wrong, or "".
func headerPatternProblem(s string) string {
	if !headerRE.MatchString(s) { // "*" is a token character: patterns match too
		return fmt.Sprintf("want a header name or a pattern of header name characters and *, got %q", s)
	}
	return ""
}

func (p *parser) validateBreaker(at func(...string) []string, br *Breaker) {
	byRate := p.has(at("breaker", "failure_rate")...)
	if byRate && p.has(at("breaker", "failure_threshold")...) {
		p.errorf(at("breaker", "failure_rate"), "set breaker.failure_threshold or breaker.failure_rate, not both")
	}
	if byRate {
		if !(br.FailureRate > 0 && br.FailureRate <= 1) {
			p.errorf(at("breaker", "failure_rate"), "must be above 0 and at most 1, got %g", br.FailureRate)
		}
		if br.MinCalls < 1 {
			p.errorf(at("breaker", "min_calls"), "must be at least 1, got %d", br.MinCalls)
		}
		if br.Period <= 0 {
			p.errorf(at("breaker", "period"), "must be greater than 0, got %s", br.Period)
		}
	} else if br.FailureThreshold < 1 {
		p.errorf(at("breaker", "failure_threshold"), "must be at least 1, got %d", br.FailureThreshold)
	}
	if br.Delay <= 0 {
		p.errorf(at("breaker", "delay"), "must be greater than 0, got %s", br.Delay)
	}
	if br.SuccessThreshold < 1 {
		p.errorf(at("breaker", "success_threshold"), "must be at least 1, got %d", br.SuccessThreshold)
	}
	if br.HalfOpenMaxCalls < 0 {
		p.errorf(at("breaker", "half_open_max_calls"), "must be 0 or more, got %d", br.HalfOpenMaxCalls)
	}
}

func (p *parser) validateRoute(c *Config, name string, r *Route, known known) {
	at := func(keys ...string) []string { return append([]string{"routes", name}, keys...) }
	if !typeRE.MatchString(name) {
		p.errorf(at(), "a route is a task type: tokens of A-Z a-z 0-9 _ - separated by dots, got %q", name)
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
		if builtin, ok := strings.CutPrefix(ref, "builtin:"); ok {
			if _, err := handlers.Builtin(builtin); err != nil {
				p.errorf(at("backends", index(i)), "unknown built-in %q%s (have %s)", builtin, didYouMean(builtin, known.builtins), strings.Join(known.builtins, ", "))
			}
		} else if tag, ok := strings.CutPrefix(ref, "tag:"); ok {
			if !known.tags[tag] {
				p.errorf(at("backends", index(i)), "no backend has tag %q%s", tag, didYouMean(tag, known.tagList))
			}
		} else if _, ok := c.Backends[ref]; !ok {
			defined := "none are defined"
			if len(known.backends) > 0 {
				defined = "defined: " + names(known.backends)
			}
			p.errorf(at("backends", index(i)), "unknown backend %q%s (%s)", ref, didYouMean(ref, known.backends), defined)
		}
	}
	if !slices.Contains(strategies, r.Strategy) {
		p.errorf(at("strategy"), "must be one of %s, got %q%s", strings.Join(strategies, ", "), r.Strategy, didYouMean(r.Strategy, strategies))
	}
	switch {
	case r.Strategy == "weighted" && len(r.Weights) == 0:
		p.errorf(at("strategy"), "strategy weighted needs weights")
	case r.Strategy != "weighted" && p.has(at("weights")...):
		p.errorf(at("weights"), "weights need strategy: weighted, got strategy %q", r.Strategy)
	}
	for _, k := range sortedKeys(r.Weights) {
		if !seen[k] {
			p.errorf(at("weights", k), "%q is not among the route's backends", k)
		}
		if w := r.Weights[k]; w <= 0 {
			p.errorf(at("weights", k), "must be greater than 0, got %d", w)
		}
	}
	if rc := r.Cache; rc != nil && rc.TTL <= 0 {
		p.errorf(at("cache", "ttl"), "must be greater than 0, got %s", rc.TTL)
	}
	if v := r.Validate; v != nil && v.JSONSchema != "" {
		path := v.JSONSchema
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(p.file), path)
		}
		switch fi, err := os.Stat(path); {
		case err != nil:
			p.errorf(at("validate", "json_schema"), "cannot read %s: %v", path, errorsUnwrapPath(err))
		case !fi.Mode().IsRegular():
			p.errorf(at("validate", "json_schema"), "%s is not a file", path)
		}
		v.JSONSchema = path
	}
}

// errorsUnwrapPath drops the path an *os.PathError repeats.
func errorsUnwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// httpURL checks an absolute http or https URL, returning the reason it is
// wrong or "".
func httpURL(s string) string {
	if s == "" {
		return "is required: an absolute http:// or https:// URL"
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "must be an absolute http:// or https:// URL, got " + quote(s)
	}
	return ""
}

func quote(s string) string { return strconv.Quote(s) }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
