package config_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestContractExample(t *testing.T) {
	c, err := config.Load("testdata/contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	flow := c.Backends["flow"]
	if flow.Kind() != "http" || flow.Timeout.D() != 2*time.Second || flow.Retry.MaxAttempts != 3 ||
		flow.Breaker.FailureThreshold != 3 || flow.RateLimit.PerSecond() != 200 || flow.MaxConcurrency != 50 {
		t.Errorf("flow decoded as %+v", flow)
	}
	if c.Backends["coder"].Kind() != "nats" || c.Backends["echoer"].Builtin != "echo" {
		t.Errorf("coder/echoer decoded as %+v / %+v", c.Backends["coder"], c.Backends["echoer"])
	}
	if got := c.Routes["code.generate"]; got.Strategy != "failover" || got.Cache.TTL.D() != 10*time.Minute {
		t.Errorf("route code.generate: %+v", got)
	}
	if c.Worker.Concurrency != 64 || c.Worker.AckWait.D() != 30*time.Second || c.Health.SLATarget != 99.9 {
		t.Errorf("defaults: %+v %+v", c.Worker, c.Health)
	}
}

func TestDefault(t *testing.T) {
	c := config.Default()
	r, ok := c.Routes["echo"]
	if !ok || len(r.Backends) != 1 || r.Backends[0] != "builtin:echo" {
		t.Errorf("echo route: got %+v, want builtin:echo", r)
	}
	if c.Worker.Concurrency != config.DefaultConcurrency || c.Worker.MaxDeliver != config.DefaultMaxDeliver {
		t.Errorf("worker defaults: %+v", c.Worker)
	}
}

func TestEmptyIsDefaults(t *testing.T) {
	for _, give := range []string{"", "\n", "# nothing\n", "~\n"} {
		c, err := config.Parse("empty.yaml", []byte(give))
		if err != nil {
			t.Fatalf("Parse(%q): %v", give, err)
		}
		if c.Worker.Concurrency != 64 {
			t.Errorf("Parse(%q): concurrency %d, want 64", give, c.Worker.Concurrency)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want []string // each error line, in order
	}{
		{"unknown key", "worker:\n  concurrency: 4\n  concurency: 5\n",
			[]string{`w.yaml:3: worker.concurency: unknown key "concurency"`}},
		{"unknown top key", "workers: {}\n", []string{`w.yaml:1: workers: unknown key "workers"`}},
		{"wrong type", "worker:\n  concurrency: lots\n", []string{`w.yaml:2: worker.concurrency: want an integer, got text "lots"`}},
		{"bad duration", "worker: {ack_wait: soon}\n", []string{`w.yaml:1: worker.ack_wait: want a duration`}},
		{"explicit zero", "worker:\n  max_deliver: 0\n", []string{`w.yaml:2: worker.max_deliver: must be greater than 0`}},
		{"unknown backend in route", "backends:\n  a: {builtin: echo}\nroutes:\n  x:\n    backends: [a, b]\n",
			[]string{`w.yaml:5: routes.x.backends[1]: unknown backend "b"`}},
		{"two kinds", "backends:\n  a:\n    builtin: echo\n    nats: {subject: x}\n", []string{`w.yaml:2: backends.a: needs exactly one of http, nats or builtin, got 2`}},
		{"bad url", "backends:\n  a:\n    http: {url: /run}\n", []string{`w.yaml:3: backends.a.http.url: must be an absolute`}},
		{"wildcard subject", "backends:\n  a:\n    nats: {subject: svc.*}\n", []string{`w.yaml:3: backends.a.nats.subject: must be a subject`}},
		{"bad rate", "backends:\n  a:\n    builtin: echo\n    rate_limit: fast\n", []string{`w.yaml:4: backends.a.rate_limit: want a rate like 200/s`}},
		{"jitter range", "backends:\n  a:\n    builtin: echo\n    retry: {jitter: 2}\n", []string{`w.yaml:4: backends.a.retry.jitter: must be between 0 and 1`}},
		{"strategy", "routes:\n  x: {backends: [\"builtin:echo\"], strategy: best}\n", []string{`w.yaml:2: routes.x.strategy: must be one of`}},
		{"unknown builtin", "routes:\n  x: {backends: [\"builtin:nope\"]}\n", []string{`w.yaml:2: routes.x.backends[0]: unknown built-in "builtin:nope"`}},
		{"unknown tag", "routes:\n  x: {backends: [\"tag:gpu\"]}\n", []string{`w.yaml:2: routes.x.backends[0]: no backend has tag "gpu"`}},
		{"dotted route", "routes:\n  code.generate:\n    backends: []\n", []string{`w.yaml:3: routes.code.generate.backends: needs at least one backend`}},
		{"syntax", "worker:\n  concurrency: [1\n", []string{`w.yaml:1: did not find expected ',' or ']'`}},
		{"two documents", "worker: {}\n---\nworker: {}\n", []string{`w.yaml:2: more than one YAML document`}},
		{"not a mapping", "- a\n- b\n", []string{`w.yaml:1: the config must be a mapping`}},
		{"several at once", "worker:\n  bogus: 1\n  ack_wait: x\n", []string{`w.yaml:2: worker.bogus: unknown key`, `w.yaml:3: worker.ack_wait: want a duration`}},
		{"duplicate key", "worker: {concurrency: 1, concurrency: 2}\n", []string{`w.yaml:1: worker: mapping key "concurrency" already defined`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("w.yaml", []byte(tt.give))
			if err == nil {
				t.Fatal("got no error")
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors %q, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d: got %q, want prefix %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestTypes(t *testing.T) {
	sizes := map[string]int64{"1024": 1024, "512KiB": 512 << 10, "64MiB": 64 << 20, "1GiB": 1 << 30, "10MB": 10e6, "100KB": 1e5, "7B": 7}
	for give, want := range sizes {
		if got, err := config.ParseSize(give); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", give, got, err, want)
		}
	}
	for _, give := range []string{"", "-1", "1.5MiB", "MiB", "12XB"} {
		if _, err := config.ParseSize(give); err == nil {
			t.Errorf("ParseSize(%q) accepted", give)
		}
	}
	rates := map[string]float64{"200/s": 200, "60/m": 1, "3600/h": 1, "5/100ms": 50}
	for give, want := range rates {
		r, err := config.ParseRate(give)
		if err != nil || r.PerSecond() != want {
			t.Errorf("ParseRate(%q) = %v/s, %v; want %v", give, r.PerSecond(), err, want)
		}
		if back, _ := config.ParseRate(r.String()); back != r {
			t.Errorf("ParseRate(%q).String() = %q does not round-trip", give, r.String())
		}
	}
	for _, give := range []string{"200", "0/s", "-1/s", "x/s", "5/0s", "5/lightyear"} {
		if _, err := config.ParseRate(give); err == nil {
			t.Errorf("ParseRate(%q) accepted", give)
		}
	}
}

// TestGolden checks each testdata/bad-*.yaml against the error text in its
// .golden file (go test ./config -update rewrites them).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad-*.yaml")
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := config.Load(f)
			if err == nil {
				t.Fatal("got no error")
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if got := err.Error() + "\n"; got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestJSONSchemaResolvedNextToConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := "routes:\n  x:\n    backends: [\"builtin:echo\"]\n    validate: {json_schema: s.json}\n"
	c, err := config.Parse(filepath.Join(dir, "w.yaml"), []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Routes["x"].Validate.JSONSchema; got != filepath.Join(dir, "s.json") {
		t.Errorf("schema path: got %q", got)
	}
	if _, err := config.Parse(filepath.Join(dir, "w.yaml"), []byte(strings.Replace(cfg, "s.json", "missing.json", 1))); err == nil {
		t.Error("missing schema accepted")
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/contract.yaml", "testdata/bad-everything.yaml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("worker: {concurrency: 1}\nroutes: {a.b: {backends: [x]}}\n"))
	f.Add([]byte("backends:\n  a:\n    http: {url: 'http://x'}\n    retry: {max_attempts: 0}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("f.yaml", data)
		if err != nil {
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
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
	})
}
