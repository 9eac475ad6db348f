package config_test

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/handlers"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// problems lists the *config.Error values in err (one, or several joined).
func problems(t *testing.T, err error) []*config.Error {
	t.Helper()
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]*config.Error, 0, len(errs))
	for _, e := range errs {
		var ce *config.Error
		if !errors.As(e, &ce) {
			t.Fatalf("got %T %q, want a *config.Error", e, e)
		}
		out = append(out, ce)
	}
	return out
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		give  string
		check func(t *testing.T, c *config.Config)
	}{
		{"empty file is all defaults", "", func(t *testing.T, c *config.Config) {
			if c.Worker.Concurrency != 64 || c.Worker.AckWait.D() != 30*time.Second || c.Worker.MaxDeliver != 5 {
				t.Errorf("worker: got %+v, want 64, 30s, 5", c.Worker)
			}
			if c.Streams.Replicas != 0 || c.Streams.ResultsMaxAge.D() != time.Hour {
				t.Errorf("streams: got %+v, want replicas 0 (unset), 1h", c.Streams)
			}
			if c.Health.Interval.D() != 10*time.Second || c.Health.SLATarget != 99.9 || c.Health.BreakerOpenAlertAfter.D() != time.Minute {
				t.Errorf("health: got %+v, want 10s, 99.9, 1m", c.Health)
			}
			if c.Cache.MaxSizeMB != 64 || len(c.Backends) != 0 || len(c.Routes) != 0 {
				t.Errorf("got cache %+v, %d backends, %d routes; want 64, 0, 0", c.Cache, len(c.Backends), len(c.Routes))
			}
		}},
		{"comments only", "# nothing yet\n", func(t *testing.T, c *config.Config) {
			if c.Worker.Concurrency != 64 {
				t.Errorf("concurrency: got %d, want 64", c.Worker.Concurrency)
			}
		}},
		{"null document", "~\n", func(t *testing.T, c *config.Config) {
			if c.Worker.Concurrency != 64 {
				t.Errorf("concurrency: got %d, want 64", c.Worker.Concurrency)
			}
		}},
		{"null value is unset", "worker: {concurrency: ~}\nhealth:\n", func(t *testing.T, c *config.Config) {
			if c.Worker.Concurrency != 64 || c.Health.SLATarget != 99.9 {
				t.Errorf("got %d, %g; want the defaults 64, 99.9", c.Worker.Concurrency, c.Health.SLATarget)
			}
		}},
		{"retry defaults", "backends:\n  a: {builtin: echo, retry: {}}\n", func(t *testing.T, c *config.Config) {
			want := config.Retry{MaxAttempts: 3, Backoff: config.Duration(100 * time.Millisecond),
				MaxBackoff: config.Duration(30 * time.Second), Jitter: 0.2}
			if got := *c.Backends["a"].Retry; got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
			if got := c.Backends["a"].Timeout.D(); got != 30*time.Second {
				t.Errorf("timeout: got %s, want 30s", got)
			}
		}},
		{"explicit jitter 0 is kept", "backends:\n  a: {builtin: echo, retry: {jitter: 0}}\n", func(t *testing.T, c *config.Config) {
			if got := c.Backends["a"].Retry.Jitter; got != 0 {
				t.Errorf("jitter: got %g, want 0", got)
			}
		}},
		{"breaker by count", "backends:\n  a: {builtin: echo, breaker: {}}\n", func(t *testing.T, c *config.Config) {
			want := config.Breaker{FailureThreshold: 3, Delay: config.Duration(10 * time.Second), SuccessThreshold: 1}
			if got := *c.Backends["a"].Breaker; got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		}},
		{"breaker by rate", "backends:\n  a: {builtin: echo, breaker: {failure_rate: 0.5}}\n", func(t *testing.T, c *config.Config) {
			want := config.Breaker{FailureRate: 0.5, MinCalls: 10, Period: config.Duration(time.Minute),
				Delay: config.Duration(10 * time.Second), SuccessThreshold: 1}
			if got := *c.Backends["a"].Breaker; got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		}},
		{"no policies unless written", "backends:\n  a: {builtin: echo}\n", func(t *testing.T, c *config.Config) {
			if b := c.Backends["a"]; b.Retry != nil || b.Breaker != nil || b.RateLimit != nil || b.MaxConcurrency != (config.Concurrency{}) {
				t.Errorf("got %+v, want no retry, breaker, rate limit or concurrency bound", b)
			}
		}},
		{"route strategy default", "routes:\n  code.generate: {backends: [\"builtin:echo\"]}\n", func(t *testing.T, c *config.Config) {
			if got := c.Routes["code.generate"].Strategy; got != "failover" {
				t.Errorf("strategy: got %q, want failover", got)
			}
		}},
		{"replicas and host:port", "nats: {url: \"127.0.0.1:4222\"}\nstreams: {replicas: 3}\n", func(t *testing.T, c *config.Config) {
			if c.Streams.Replicas != 3 || c.NATS.URL != "127.0.0.1:4222" {
				t.Errorf("got replicas %d, url %q; want 3, 127.0.0.1:4222", c.Streams.Replicas, c.NATS.URL)
			}
		}},
		{"duration zero as number", "routes:\n  x: {backends: [\"builtin:echo\"], deadline: 0}\n", func(t *testing.T, c *config.Config) {
			if got := c.Routes["x"].Deadline; got != 0 {
				t.Errorf("deadline: got %s, want 0s", got)
			}
		}},
		{"reply subjects default", "worker: {concurrency: 2}\n", func(t *testing.T, c *config.Config) {
			if got := c.Worker.ReplySubjects; !slices.Equal(got, []string{"_INBOX.>"}) {
				t.Errorf("reply_subjects: got %q, want [_INBOX.>]", got)
			}
		}},
		{"reply subjects null is the default", "worker: {reply_subjects: ~}\n", func(t *testing.T, c *config.Config) {
			if got := c.Worker.ReplySubjects; !slices.Equal(got, []string{config.DefaultReplySubject}) {
				t.Errorf("reply_subjects: got %q, want [_INBOX.>]", got)
			}
		}},
		{"reply subjects written empty answer none", "worker: {reply_subjects: []}\n", func(t *testing.T, c *config.Config) {
			if got := c.Worker.ReplySubjects; got == nil || len(got) != 0 {
				t.Errorf("reply_subjects: got %#v, want an empty list, not the default", got)
			}
		}},
		{"reply subjects replace the default", "worker:\n  reply_subjects: [\">\", \"*\", \"$JS.API.>\"]\n", func(t *testing.T, c *config.Config) {
			// Syntax only: the never-answered list is the worker's, at run time.
			if got := c.Worker.ReplySubjects; !slices.Equal(got, []string{">", "*", "$JS.API.>"}) {
				t.Errorf("reply_subjects: got %q, want [> * $JS.API.>]", got)
			}
		}},
		{"redact and forward headers", "dlq: {redact_headers: [X-Session, \"X-Secret-*\"]}\n" +
			"backends:\n  a: {nats: {subject: s}, forward_headers: [\"X-Request-*\", \"*\"]}\n  b: {builtin: echo, forward_headers: [X-A]}\n",
			func(t *testing.T, c *config.Config) {
				if got := c.DLQ.RedactHeaders; !slices.Equal(got, []string{"X-Session", "X-Secret-*"}) {
					t.Errorf("redact_headers: got %q", got)
				}
				if got := c.Backends["a"].ForwardHeaders; !slices.Equal(got, []string{"X-Request-*", "*"}) {
					t.Errorf("forward_headers of a: got %q", got)
				}
				if got := c.Backends["b"].ForwardHeaders; !slices.Equal(got, []string{"X-A"}) {
					t.Errorf("forward_headers of b: got %q", got)
				}
			}},
		{"no header lists unless written", "backends:\n  a: {builtin: echo}\n", func(t *testing.T, c *config.Config) {
			if c.DLQ.RedactHeaders != nil || c.Backends["a"].ForwardHeaders != nil {
				t.Errorf("got redact %q, forward %q; want none", c.DLQ.RedactHeaders, c.Backends["a"].ForwardHeaders)
			}
		}},
		{"anchors and merge keys", "backends:\n  a: {builtin: echo, breaker: &b {failure_threshold: 7, delay: 1s}}\n" +
			"  b: {builtin: echo, breaker: {<<: *b, delay: 2s}}\n", func(t *testing.T, c *config.Config) {
			if got := c.Backends["b"].Breaker; got.FailureThreshold != 7 || got.Delay.D() != 2*time.Second {
				t.Errorf("merged breaker: got %+v, want failure_threshold 7, delay 2s", got)
			}
		}},
		{"a written key wins over a merged one, the first merge source over the next",
			"backends:\n  a: {builtin: echo, breaker: &x {delay: 1s, min_calls: 4, failure_rate: 0.5}}\n" +
				"  b: {builtin: echo, breaker: &y {delay: 2s, min_calls: 5, period: 3s}}\n" +
				"  c: {builtin: echo, breaker: {min_calls: 6, <<: [*x, *y]}}\n", func(t *testing.T, c *config.Config) {
				want := config.Breaker{FailureRate: 0.5, MinCalls: 6, Period: config.Duration(3 * time.Second),
					Delay: config.Duration(time.Second), SuccessThreshold: 1}
				if got := *c.Backends["c"].Breaker; got != want {
					t.Errorf("got %+v, want %+v", got, want)
				}
			}},
		{"a merged zero is written, not defaulted", "backends:\n  a: {builtin: echo, retry: &r {jitter: 0}}\n  b: {builtin: echo, retry: {<<: *r}}\n",
			func(t *testing.T, c *config.Config) {
				if got := c.Backends["b"].Retry.Jitter; got != 0 {
					t.Errorf("jitter: got %g, want 0", got)
				}
			}},
		{"an alias of a scalar", "worker: {ack_wait: &w 45s}\nhealth: {interval: *w}\n", func(t *testing.T, c *config.Config) {
			if c.Health.Interval.D() != 45*time.Second {
				t.Errorf("interval: got %s, want 45s", c.Health.Interval)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("w.yaml", []byte(tt.give))
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			tt.check(t, c)
		})
	}
}

// wantErr is one expected problem: its line (0: any) and path exactly,
// and a part of its reason.
type wantErr struct {
	line   int
	path   string
	reason string
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want []wantErr
	}{
		{"unknown key", "worker:\n  concurrency: 4\n  concurency: 5\n",
			[]wantErr{{3, "worker.concurency", `unknown key "concurency", did you mean "concurrency"? (valid keys: concurrency, ack_wait, max_deliver, max_payload, reply_subjects)`}}},
		{"unknown top-level key", "workers: {}\n", []wantErr{{1, "workers", `unknown key "workers"`}}},
		{"unknown key in flow mapping", "backends: {a: {builtin: echo, timout: 1s}}\n",
			[]wantErr{{1, "backends.a.timout", `unknown key "timout"`}}},
		{"same unknown key twice on a line", "backends: {a: {builtin: echo, x: 1}, b: {builtin: echo, x: 2}}\n",
			[]wantErr{{1, "backends.a.x", `unknown key "x"`}, {1, "backends.b.x", `unknown key "x"`}}},
		{"wrong type", "worker:\n  concurrency: lots\n", []wantErr{{2, "worker.concurrency", `want an integer, got text "lots"`}}},
		{"long wrong value", "worker:\n  concurrency: abcdefghijklmnop\n", []wantErr{{2, "worker.concurrency", `want an integer, got text "abcdefg..."`}}},
		{"mapping for an integer", "worker:\n  concurrency: {a: 1}\n", []wantErr{{2, "worker.concurrency", "want an integer, got a mapping"}}},
		{"list for a mapping", "backends: [a]\n", []wantErr{{1, "backends", "want a mapping, got a list"}}},
		{"section not a mapping", "worker: 5\n", []wantErr{{1, "worker", "want a mapping, got number 5"}}},
		{"float for an integer", "backends:\n  a:\n    builtin: echo\n    max_concurrency: 1.5\n",
			[]wantErr{{4, "backends.a.max_concurrency", `want an integer, adaptive or {adaptive: {min: N, max: M}}, got "1.5"`}}},
		{"max_concurrency word", "backends:\n  a:\n    builtin: echo\n    max_concurrency: adaptiv\n",
			[]wantErr{{4, "backends.a.max_concurrency", `want an integer, adaptive or {adaptive: {min: N, max: M}}, got "adaptiv"`}}},
		{"max_concurrency list", "backends:\n  a: {builtin: echo, max_concurrency: [1]}\n",
			[]wantErr{{2, "backends.a.max_concurrency", `want an integer, adaptive or {adaptive: {min: N, max: M}}, got a list`}}},
		{"adaptive unknown key", "backends:\n  a:\n    builtin: echo\n    max_concurrency:\n      adaptive: {min: 2, maximum: 5}\n",
			[]wantErr{{5, "backends.a.max_concurrency.adaptive.maximum", `unknown key "maximum" (valid keys: min, max, initial)`}}},
		{"adaptive float bound", "backends:\n  a:\n    builtin: echo\n    max_concurrency: {adaptive: {max: 2.5}}\n",
			[]wantErr{{4, "backends.a.max_concurrency.adaptive.max", `want an integer, got "2.5"`}}},
		{"adaptive bounds", "backends:\n  a:\n    builtin: echo\n    max_concurrency: {adaptive: {min: 10, max: 5}}\n",
			[]wantErr{{4, "backends.a.max_concurrency.adaptive.max", "must be at least min (10) and at most 100000, got 5"}}},
		{"adaptive initial", "backends:\n  a:\n    builtin: echo\n    max_concurrency:\n      adaptive: {min: 2, max: 8, initial: 9}\n",
			[]wantErr{{5, "backends.a.max_concurrency.adaptive.initial", "must be between min (2) and max (8), got 9"}}},
		{"adaptive min", "backends:\n  a:\n    builtin: echo\n    max_concurrency:\n      adaptive:\n        min: 0\n",
			[]wantErr{{6, "backends.a.max_concurrency.adaptive.min", "must be at least 1, got 0"}}},
		{"oauth2 typo", "backends:\n  a:\n    http: {url: http://h/run}\n    auth: {oauth2: {token_url: http://h/token, clientid: c}}\n",
			[]wantErr{{4, "backends.a.auth.oauth2.clientid", `unknown key "clientid", did you mean "client_id"?`}}},
		{"retry budget", "backends:\n  a:\n    builtin: echo\n    retry: {budget: 1.5}\n",
			[]wantErr{{4, "backends.a.retry.budget", "must be a share of the calls between 0 (no budget) and 1, got 1.5"}}},
		{"float weight", "routes:\n  x: {backends: [\"builtin:echo\"], strategy: weighted, weights: {\"builtin:echo\": 0.5}}\n",
			[]wantErr{{2, `routes.x.weights.builtin:echo`, "want an integer, got 0.5"}}},
		{"bad duration", "worker: {ack_wait: soon}\n", []wantErr{{1, "worker.ack_wait", `want a duration like 10s, 1m30s or 250ms, got "soon"`}}},
		{"duration without unit", "worker:\n  ack_wait: 30\n", []wantErr{{2, "worker.ack_wait", `want a duration with a unit (ms, s, m, h), got "30"`}}},
		{"negative duration", "backends:\n  a:\n    builtin: echo\n    timeout: -1s\n", []wantErr{{4, "backends.a.timeout", `must not be negative, got "-1s"`}}},
		{"duration as mapping", "worker:\n  ack_wait:\n    s: 1\n", []wantErr{{2, "worker.ack_wait", "want a duration like 10s, got a mapping"}}},
		{"bad size", "worker: {max_payload: 1.5MiB}\n", []wantErr{{1, "worker.max_payload", `want a size like 1048576, 512KiB or 64MiB, got "1.5MiB"`}}},
		{"bad rate", "backends:\n  a:\n    builtin: echo\n    rate_limit: fast\n", []wantErr{{4, "backends.a.rate_limit", `want a rate like 200/s, 10/m or 50/100ms, got "fast"`}}},
		{"duplicate key", "worker: {concurrency: 1, concurrency: 2}\n", []wantErr{{1, "worker.concurrency", `duplicate key "concurrency" (first at line 1)`}}},
		{"several decode problems at once", "worker:\n  bogus: 1\n  ack_wait: x\nhealth: {sla: 1}\n", []wantErr{
			{2, "worker.bogus", `unknown key "bogus"`}, {3, "worker.ack_wait", "want a duration"}, {4, "health.sla", `unknown key "sla"`}}},

		{"syntax", "worker:\n  concurrency: [1\n", []wantErr{{2, "", "did not find expected ',' or ']'"}}},
		{"syntax on line 1", "\tworker: {}\n", []wantErr{{1, "", "found character that cannot start any token"}}},
		{"bad indentation", "worker:\n  concurrency: 1\n ack_wait: 2s\n", []wantErr{{3, "", "did not find expected key"}}},
		{"password in a bad url not shown", "nats: {url: \"http://me:s3cret@host:4222\"}\n", []wantErr{{1, "nats.url", `scheme must be nats, tls, ws or wss, got "http://host:4222"`}}},
		{"dotted prefix", "prefix: acme.prod\n", []wantErr{{1, "prefix", `must be one subject token of A-Z a-z 0-9 _ - (it names streams too), got "acme.prod"`}}},
		{"invalid UTF-8", "worker: {}\nprefix: \xff\n", []wantErr{{2, "", "invalid leading UTF-8 octet"}}},
		{"unknown anchor", "worker: {}\nbackends: *nope\n", []wantErr{{2, "", "unknown anchor 'nope' referenced"}}},
		{"list as a key", "? [a]\n: 1\n", []wantErr{{1, "", "a key must be text, got a list"}}},
		{"alias of a mapping as a key, next to a merge key (yaml.v3 panics on it)",
			"backends: {0: {builtin: echo, breaker: &b {delay: 1s}}, 1: {builtin: echo, breaker: {<<, *b}}}",
			[]wantErr{{1, "backends.1.breaker", "a key must be text, got a mapping"},
				{1, "backends.1.breaker", "a merge key (<<) takes a mapping or a list of mappings, got nothing"}}},
		{"a key problem does not hide the others", "? \nworker: {concurrency: x}\n", []wantErr{
			{1, "", "a key must be text, got nothing"}, {2, "worker.concurrency", `want an integer, got text "x"`}}},
		{"a key whose tag does not fit", "backends:\n  !!int a: {builtin: echo}\n", []wantErr{{2, "backends", `a key must be text, got !!int "a"`}}},
		{"merge of nothing", "backends: {a: {builtin: echo, breaker: {<<: ~}}}\n",
			[]wantErr{{1, "backends.a.breaker", "a merge key (<<) takes a mapping or a list of mappings, got nothing"}}},
		{"merge of a scalar in a list", "backends:\n  a:\n    builtin: echo\n    breaker: {<<: [{delay: 1s}, 5]}\n",
			[]wantErr{{4, "backends.a.breaker", "a merge key (<<) takes a mapping or a list of mappings, got number 5"}}},
		{"a mapping that merges itself", "backends: {a: &a {builtin: echo, <<: *a}}\n", []wantErr{{1, "backends.a", `anchor "a" merges itself`}}},
		{"merge keys that expand without end", "backends:\n" + doubling(30), []wantErr{{0, "", "the document expands to too many values"}}},
		{"duplicate key in a block", "worker:\n  concurrency: 1\n  ack_wait: 1s\n  concurrency: 2\n",
			[]wantErr{{4, "worker.concurrency", `duplicate key "concurrency" (first at line 2)`}}},
		{"a null list item keeps its index", "worker:\n  reply_subjects:\n    - a.b\n    - ~\n    - \"c d\"\n", []wantErr{
			{4, "worker.reply_subjects[1]", "empty subject"}, {5, "worker.reply_subjects[2]", "must not contain spaces"}}},
		{"a problem in a merged value is reported where it is written",
			"backends:\n  a: {builtin: echo, retry: &r {max_attempts: x}}\n  b:\n    builtin: echo\n    retry: {<<: *r}\n", []wantErr{
				{2, "backends.a.retry.max_attempts", `want an integer, got text "x"`}, {2, "backends.b.retry.max_attempts", `want an integer, got text "x"`}}},
		{"two documents", "worker: {}\n---\nworker: {}\n", []wantErr{{2, "", "a second YAML document"}}},
		{"not a mapping", "- a\n- b\n", []wantErr{{1, "", "the config must be a mapping of keys"}}},

		{"explicit zero is not replaced", "worker:\n  max_deliver: 0\n", []wantErr{{2, "worker.max_deliver", "must be at least 1, got 0"}}},
		{"retry max_attempts 0", "backends:\n  flow:\n    http: {url: \"http://x/run\"}\n    retry:\n      max_attempts: 0\n",
			[]wantErr{{5, "backends.flow.retry.max_attempts", "must be at least 1, got 0"}}},
		{"replicas 0", "streams:\n  replicas: 0\n", []wantErr{{2, "streams.replicas", "must be 1 to 5, got 0"}}},
		{"concurrency range", "worker: {concurrency: 100001}\n", []wantErr{{1, "worker.concurrency", "must be 1 to 100000, got 100001"}}},
		{"ack_wait below 1s", "worker:\n  ack_wait: 10ms\n", []wantErr{{2, "worker.ack_wait", "must be at least 1s, got 10ms"}}},
		{"sla_target", "health: {sla_target: 0}\n", []wantErr{{1, "health.sla_target", "got 0"}}},
		{"two kinds", "backends:\n  a:\n    builtin: echo\n    nats: {subject: x}\n",
			[]wantErr{{2, "backends.a", "needs exactly one of http, nats or builtin, got nats and builtin"}}},
		{"no kind", "backends:\n  a: ~\n", []wantErr{{2, "backends.a", "needs one of http, nats or builtin"}}},
		{"unknown built-in backend", "backends:\n  a:\n    builtin: nope\n", []wantErr{{3, "backends.a.builtin", `unknown built-in "nope"`}}},
		{"empty backend name", "backends:\n  \"\": {builtin: echo}\n", []wantErr{{2, `backends.""`, "must not be empty"}}},
		{"backend name with builtin:", "backends:\n  \"builtin:echo\": {builtin: echo}\n", []wantErr{{2, "backends.builtin:echo", "must not start with builtin: or tag:"}}},
		{"backend name with dot", "backends:\n  a.b: {builtin: echo}\n", []wantErr{{2, "backends.a.b", `got "a.b"`}}},
		{"relative url", "backends:\n  a:\n    http: {url: /run}\n", []wantErr{{3, "backends.a.http.url", `must be an absolute http:// or https:// URL, got "/run"`}}},
		{"missing url", "backends:\n  a:\n    http: {}\n", []wantErr{{3, "backends.a.http.url", "is required"}}},
		{"missing subject", "backends:\n  a:\n    nats: {}\n", []wantErr{{3, "backends.a.nats.subject", "is required"}}},
		{"wildcard subject", "backends:\n  a:\n    nats: {subject: svc.*}\n", []wantErr{{3, "backends.a.nats.subject", `got "svc.*"`}}},
		{"timeout 0", "backends:\n  a:\n    builtin: echo\n    timeout: 0s\n", []wantErr{{4, "backends.a.timeout", "must be greater than 0, got 0s"}}},
		{"jitter range", "backends:\n  a:\n    builtin: echo\n    retry: {jitter: 2}\n", []wantErr{{4, "backends.a.retry.jitter", "must be between 0 and 1, got 2"}}},
		{"max_backoff below backoff", "backends:\n  a:\n    builtin: echo\n    retry:\n      backoff: 1m\n",
			[]wantErr{{4, "backends.a.retry.max_backoff", "must be at least retry.backoff (1m0s), got 30s"}}},
		{"breaker rate and count", "backends:\n  a:\n    builtin: echo\n    breaker: {failure_threshold: 3, failure_rate: 0.5}\n",
			[]wantErr{{4, "backends.a.breaker.failure_rate", "not both"}}},
		{"breaker rate 0", "backends:\n  a:\n    builtin: echo\n    breaker:\n      failure_rate: 0\n",
			[]wantErr{{5, "backends.a.breaker.failure_rate", "must be above 0 and at most 1, got 0"}}},
		{"negative max_concurrency", "backends:\n  a: {builtin: echo, max_concurrency: -1}\n", []wantErr{{2, "backends.a.max_concurrency", "got -1"}}},
		{"two token sources", "backends:\n  a:\n    http: {url: \"http://x\"}\n    auth: {bearer_token_file: f, bearer_token_env: E}\n",
			[]wantErr{{4, "backends.a.auth", "not both"}}},
		{"password without user", "nats:\n  password: p\n", []wantErr{{2, "nats.password", "needs nats.user"}}},
		{"cert without key", "nats:\n  tls:\n    cert: c.pem\n", []wantErr{{3, "nats.tls.cert", "needs nats.tls.key"}}},
		{"nats url scheme", "nats: {url: \"http://x:4222\"}\n", []wantErr{{1, "nats.url", `scheme must be nats, tls, ws or wss, got "http://x:4222"`}}},
		{"unknown backend in route", "backends:\n  a: {builtin: echo}\nroutes:\n  x:\n    backends: [a, b]\n",
			[]wantErr{{5, "routes.x.backends[1]", `unknown backend "b" (defined: a)`}}},
		{"misspelt backend", "backends:\n  flow: {builtin: echo}\n  coder: {builtin: echo}\nroutes:\n  x:\n    backends: [flw]\n",
			[]wantErr{{6, "routes.x.backends[0]", `unknown backend "flw", did you mean "flow"? (defined: coder, flow)`}}},
		{"misspelt strategy", "routes:\n  x: {backends: [\"builtin:echo\"], strategy: round-robin}\n",
			[]wantErr{{2, "routes.x.strategy", `got "round-robin", did you mean "round_robin"?`}}},
		{"unknown backend, none defined", "routes:\n  x:\n    backends:\n      - b\n",
			[]wantErr{{4, "routes.x.backends[0]", `unknown backend "b" (none are defined)`}}},
		{"unknown built-in in route", "routes:\n  x: {backends: [\"builtin:nope\"]}\n",
			[]wantErr{{2, "routes.x.backends[0]", `unknown built-in "nope" (have ` + strings.Join(handlers.BuiltinNames(), ", ") + ")"}}},
		{"unknown tag", "routes:\n  x: {backends: [\"tag:gpu\"]}\n", []wantErr{{2, "routes.x.backends[0]", `no backend has tag "gpu"`}}},
		{"duplicate entry", "routes:\n  x: {backends: [\"builtin:echo\", \"builtin:echo\"]}\n", []wantErr{{2, "routes.x.backends[1]", `"builtin:echo" is listed twice`}}},
		{"no backends", "routes:\n  code.generate:\n    backends: []\n", []wantErr{{3, "routes.code.generate.backends", "needs at least one backend"}}},
		{"route without backends key", "routes:\n  x: {strategy: failover}\n", []wantErr{{2, "routes.x.backends", "needs at least one backend"}}},
		{"wildcard route", "routes:\n  \"code.>\": {backends: [\"builtin:echo\"]}\n", []wantErr{{2, "routes.code.>", `a route is a task type`}}},
		{"strategy", "routes:\n  x: {backends: [\"builtin:echo\"], strategy: best}\n",
			[]wantErr{{2, "routes.x.strategy", `must be one of failover, round_robin, weighted, least_latency, got "best"`}}},
		{"weighted without weights", "routes:\n  x:\n    backends: [\"builtin:echo\"]\n    strategy: weighted\n",
			[]wantErr{{4, "routes.x.strategy", "strategy weighted needs weights"}}},
		{"weights without weighted", "routes:\n  x:\n    backends: [\"builtin:echo\"]\n    weights: {\"builtin:echo\": 1}\n",
			[]wantErr{{4, "routes.x.weights", `weights need strategy: weighted, got strategy "failover"`}}},
		{"weight for another backend", "routes:\n  x:\n    backends: [\"builtin:echo\"]\n    strategy: weighted\n    weights:\n      other: 1\n",
			[]wantErr{{6, "routes.x.weights.other", `"other" is not among the route's backends`}}},
		{"cache without ttl", "routes:\n  x:\n    backends: [\"builtin:echo\"]\n    cache: {shared: true}\n",
			[]wantErr{{4, "routes.x.cache.ttl", "must be greater than 0, got 0s"}}},
		{"missing schema", "routes:\n  x:\n    backends: [\"builtin:echo\"]\n    validate:\n      json_schema: nope.json\n",
			[]wantErr{{5, "routes.x.validate.json_schema", "cannot read nope.json: no such file or directory"}}},
		{"reply subject with a partial wildcard", "worker:\n  reply_subjects:\n    - _INBOX.>\n    - \"cb.x*\"\n",
			[]wantErr{{4, "worker.reply_subjects[1]", `* and > are wildcards only as a whole token, got "x*" in "cb.x*"`}}},
		{"reply subject > not last", "worker: {reply_subjects: [\">.a\"]}\n",
			[]wantErr{{1, "worker.reply_subjects[0]", "must be its last token"}}},
		{"reply subject trailing dot", "worker:\n  reply_subjects: [_INBOX.]\n",
			[]wantErr{{2, "worker.reply_subjects[0]", "empty token"}}},
		{"reply subject with a tab", "worker:\n  reply_subjects: [\"a\\tb\"]\n",
			[]wantErr{{2, "worker.reply_subjects[0]", "must not contain spaces or control characters"}}},
		{"reply subjects not a list", "worker:\n  reply_subjects: _INBOX.>\n",
			[]wantErr{{2, "worker.reply_subjects", `want a list, got text "_INBOX.>"`}}},
		{"redact header not a name", "dlq:\n  redact_headers:\n    - \"X:Y\"\n",
			[]wantErr{{3, "dlq.redact_headers[0]", `want a header name or a pattern of header name characters and *, got "X:Y"`}}},
		{"unknown dlq key", "dlq: {redact: [X]}\n", []wantErr{{1, "dlq.redact", `unknown key "redact" (valid keys: redact_headers)`}}},
		{"forward header credentials", "backends:\n  a:\n    http: {url: \"http://x\"}\n    forward_headers:\n      - X-Ok\n      - authorization\n",
			[]wantErr{{6, "backends.a.forward_headers[1]", `"authorization": credentials are never taken from a task`}}},
		{"forward header twice", "backends:\n  a: {builtin: echo, forward_headers: [X-A, x-a]}\n",
			[]wantErr{{2, "backends.a.forward_headers[1]", `"x-a" is listed twice`}}},
		{"forward headers not a list", "backends:\n  a:\n    builtin: echo\n    forward_headers: X-A\n",
			[]wantErr{{4, "backends.a.forward_headers", `want a list, got text "X-A"`}}},
		{"values sorted by line", "routes:\n  x: {backends: [b]}\nworker: {max_deliver: 0}\n", []wantErr{
			{2, "routes.x.backends[0]", `unknown backend "b"`}, {3, "worker.max_deliver", "must be at least 1"}}},
		{"error in an anchor is reported where it is written", "backends:\n  a: {builtin: echo, retry: &r {max_attempts: 0}}\n  b: {builtin: echo, retry: *r}\n",
			[]wantErr{{2, "backends.a.retry.max_attempts", "must be at least 1, got 0"}, {2, "backends.b.retry.max_attempts", "must be at least 1, got 0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("w.yaml", []byte(tt.give))
			if err == nil {
				t.Fatalf("got config %+v, want an error", c)
			}
			if c != nil {
				t.Errorf("got a config with the error, want nil")
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("got %v, want it to wrap ErrInvalid", err)
			}
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems:\n%v\nwant %d", len(got), err, len(tt.want))
			}
			for i, w := range tt.want {
				g := got[i]
				if g.File != "w.yaml" || (w.line != 0 && g.Line != w.line) || g.Path != w.path || !strings.Contains(g.Reason, w.reason) {
					t.Errorf("problem %d: got %q, want w.yaml:%d: %s: ...%s...", i, g, w.line, w.path, w.reason)
				}
			}
		})
	}
}

// doubling is n backends, each merging the one before it twice: a few
// lines that would stand for 2^n keys.
func doubling(n int) string {
	var b strings.Builder
	b.WriteString("  x0: &x0 {builtin: echo}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  x%d: &x%d {<<: [*x%d, *x%d]}\n", i, i, i-1, i-1)
	}
	return b.String()
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		give *config.Error
		want string
	}{
		{&config.Error{File: "worker.yaml", Line: 12, Path: "backends.flow.retry.max_attempts", Reason: "must be at least 1, got 0"},
			"worker.yaml:12: backends.flow.retry.max_attempts: must be at least 1, got 0"},
		{&config.Error{File: "worker.yaml", Reason: "unknown anchor 'x' referenced"}, "worker.yaml: unknown anchor 'x' referenced"},
		{&config.Error{Line: 3, Path: "worker", Reason: "r"}, "line 3: worker: r"},
		{&config.Error{Reason: "r"}, "r"},
	}
	for _, tt := range tests {
		if got := tt.give.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
		if !errors.Is(tt.give, config.ErrInvalid) {
			t.Errorf("%q does not wrap ErrInvalid", tt.want)
		}
	}
}

func TestDefault(t *testing.T) {
	c := config.Default()
	names := handlers.DefaultBuiltinNames()
	if len(c.Routes) != len(names) || len(c.Backends) != 0 {
		t.Fatalf("got %d routes and %d backends, want %d routes and no backends", len(c.Routes), len(c.Backends), len(names))
	}
	for _, name := range names {
		r, ok := c.Routes[name]
		if !ok {
			t.Fatalf("no default route %q", name)
		}
		if len(r.Backends) != 1 || r.Backends[0] != "builtin:"+name || r.Strategy != "failover" {
			t.Errorf("route %q: got %+v, want [builtin:%s] failover", name, r, name)
		}
	}
	empty, err := config.Parse("", nil)
	if err != nil {
		t.Fatal(err)
	}
	empty.Routes = c.Routes
	if got, want := jsonOf(t, c), jsonOf(t, empty); got != want {
		t.Errorf("Default differs from an empty file beyond its routes:\ngot  %s\nwant %s", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, config.ErrInvalid) {
		t.Errorf("got %v, want a not-exist error that is not ErrInvalid", err)
	}
}

func TestJSONSchemaResolvedNextToConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(dir, "abs.json")
	if err := os.WriteFile(abs, []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		give string
		want string // resolved path, or "" for an error
	}{
		{"s.json", filepath.Join(dir, "s.json")},
		{abs, abs},
		{"missing.json", ""},
		{".", ""}, // a directory
	}
	for _, tt := range tests {
		cfg := "routes:\n  x:\n    backends: [\"builtin:echo\"]\n    validate: {json_schema: \"" + tt.give + "\"}\n"
		c, err := config.Parse(filepath.Join(dir, "w.yaml"), []byte(cfg))
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("json_schema %q: got no error, want one", tt.give)
		case tt.want != "" && err != nil:
			t.Errorf("json_schema %q: got %v, want none", tt.give, err)
		case tt.want != "":
			if got := c.Routes["x"].Validate.JSONSchema; got != tt.want {
				t.Errorf("json_schema %q: got %q, want %q", tt.give, got, tt.want)
			}
		}
	}
}

// jsonOf is the stable JSON form of a config: keys of maps sorted,
// durations and rates as written in a file.
func jsonOf(t *testing.T, c *config.Config) string {
	t.Helper()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "_INBOX.>", not "_INBOX.\u003e"
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// TestGolden loads each testdata/*.yaml. A file named bad-*.yaml must fail
// and its .golden file holds the error text; any other must load and its
// .golden file holds the decoded config as JSON. go test ./config -update
// rewrites the golden files.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("got %d inputs (%v), want some", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := config.Load(f)
			bad := strings.HasPrefix(filepath.Base(f), "bad-")
			var got string
			switch {
			case bad && err == nil:
				t.Fatalf("got no error, want one")
			case bad:
				if !errors.Is(err, config.ErrInvalid) {
					t.Errorf("got %v, want it to wrap ErrInvalid", err)
				}
				got = err.Error() + "\n"
			case err != nil:
				t.Fatalf("got %v, want none", err)
			default:
				got = jsonOf(t, c) + "\n"
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		"worker: {concurrency: 1}\nroutes: {a.b: {backends: [x]}}\n",
		"backends:\n  a:\n    http: {url: 'http://x'}\n    retry: {max_attempts: 0}\n",
		"backends: {a: {builtin: echo, breaker: &b {failure_rate: 0.5}}, b: {builtin: echo, breaker: {<<: *b}}}\n",
		"a: &a [*a]\n",
		"backends: {a: &a {<<: *a}}\n",
		"worker: {concurrency: 1.5e3, ack_wait: 1e3}\n",
		"routes: {x: {backends: [\"tag:\"], weights: {\"\": -1}}}\n",
		"? [a]\n: 1\n",
		"worker: !!binary aGVsbG8=\n",
		"---\n...\n---\n",
		"worker: {reply_subjects: [\"_INBOX.>\", \"a.*.b\", \">\", \"a.>.b\", \"\"]}\n",
		"dlq: {redact_headers: [\"X-*\", \"\", x]}\nbackends: {a: {builtin: echo, forward_headers: [\"*\", Nats-Msg-Id]}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("f.yaml", data)
		if err != nil {
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("got %v, want it to wrap ErrInvalid", err)
			}
			for _, e := range problems(t, err) {
				if e.Line < 0 || e.Reason == "" {
					t.Fatalf("got problem %#v, want a line >= 0 and a reason", e)
				}
			}
			if c != nil {
				t.Fatal("got a config with the error")
			}
			return
		}
		if c.Worker.Concurrency < 1 || c.Worker.MaxDeliver < 1 || c.Worker.AckWait.D() < time.Second {
			t.Fatalf("accepted impossible worker settings %+v", c.Worker)
		}
		for name, r := range c.Routes {
			if len(r.Backends) == 0 {
				t.Fatalf("accepted route %q without backends", name)
			}
		}
		for name, b := range c.Backends {
			if b.Timeout <= 0 || (b.Retry != nil && b.Retry.MaxAttempts < 1) {
				t.Fatalf("accepted backend %q with %+v", name, b)
			}
		}
		for _, subj := range c.Worker.ReplySubjects {
			if !validPattern(subj) {
				t.Fatalf("accepted reply subject %q", subj)
			}
		}
		for name, b := range c.Backends {
			for _, h := range b.ForwardHeaders {
				if err := handlers.CheckForwardHeader(h); err != nil {
					t.Fatalf("backend %q: accepted forward_headers entry %q: %v", name, h, err)
				}
			}
		}
		for _, h := range c.DLQ.RedactHeaders {
			if h == "" || strings.ContainsAny(h, " \t\r\n:") {
				t.Fatalf("accepted redact_headers entry %q", h)
			}
		}
		// An accepted config can be shown (logs, golden files).
		if _, err := json.Marshal(c); err != nil {
			t.Fatalf("cannot marshal an accepted config: %v", err)
		}
	})
}

// validPattern is an independent statement of a NATS subject pattern:
// dot-separated non-empty tokens without whitespace, "*" and ">" only as
// whole tokens, ">" last.
func validPattern(s string) bool {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return false
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		if tok == "" || (tok == ">" && i < len(toks)-1) || (len(tok) > 1 && strings.ContainsAny(tok, "*>")) {
			return false
		}
	}
	return true
}
