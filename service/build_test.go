package service

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
)

// A backend's forward_headers in the config decide which task headers its
// service receives, for HTTP and NATS backends alike.
func TestBuildForwardHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
	t.Cleanup(srv.Close)

	nc := testkit.StartServer(t, testkit.NoJetStream()).Connect(t)
	sub, err := nc.Subscribe("svc.wire", func(m *nats.Msg) {
		got <- http.Header(m.Header)
		_ = m.Respond(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	cfg, err := config.Parse("w.yaml", []byte(`
backends:
  web: {http: {url: "`+srv.URL+`"}, forward_headers: ["X-Request-*"]}
  svc: {nats: {subject: svc.wire}, forward_headers: [X-User-Id]}
  bare: {http: {url: "`+srv.URL+`"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(cfg, nc, slog.New(slog.NewTextHandler(io.Discard, nil)), Observers{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)

	tests := []struct {
		backend string
		want    map[string]bool // header → received
	}{
		{"web", map[string]bool{"X-Request-Id": true, "X-User-Id": false, "Cookie": false}},
		{"svc", map[string]bool{"X-Request-Id": false, "X-User-Id": true, "Cookie": false}},
		{"bare", map[string]bool{"X-Request-Id": false, "X-User-Id": false, "Cookie": false}},
	}
	for _, tc := range tests {
		t.Run(tc.backend, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req := &handlers.Request{TaskID: "t-1", Type: "x", Attempt: 1,
				Header: nats.Header{"X-Request-Id": {"r"}, "X-User-Id": {"u"}, "Cookie": {"c"}}}
			if _, err := b.Targets[tc.backend].Backend.Call(ctx, req); err != nil {
				t.Fatal(err)
			}
			h := <-got
			for k, want := range tc.want {
				if received := h.Get(k) != "" || len(h[k]) > 0; received != want {
					t.Errorf("%s received %s: got %v, want %v", tc.backend, k, received, want)
				}
			}
		})
	}
}

// max_concurrency and retry.budget reach the targets' policies, and an
// oauth2 backend's calls carry the token endpoint's token.
func TestBuildRouterLimitsAndOAuth2(t *testing.T) {
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, secret, _ := r.BasicAuth(); secret != "wire-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"wire-token","token_type":"bearer","expires_in":3600}`)
	}))
	t.Cleanup(tokenSrv.Close)
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header.Get("Authorization") }))
	t.Cleanup(srv.Close)
	t.Setenv("BW_WIRE_SECRET", "wire-secret")

	cfg, err := config.Parse("w.yaml", []byte(`
backends:
  model:
    http: {url: "`+srv.URL+`"}
    retry: {max_attempts: 3, budget: 0.5}
    max_concurrency: {adaptive: {min: 2, max: 30, initial: 7}}
    auth: {oauth2: {token_url: "`+tokenSrv.URL+`", client_id: c, client_secret_env: BW_WIRE_SECRET, endpoint_params: {audience: x}}}
  fixed: {builtin: echo, max_concurrency: 9}
routes:
  run: {backends: [model]}
`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Observers{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	model, fixed := b.Targets["model"], b.Targets["fixed"]
	if l := model.Limits(); l.Concurrency != 7 || !l.Adaptive || l.RetryBudget != 0 {
		t.Errorf("model limits: got %+v, want adaptive 7 and an empty budget", l)
	}
	if l := fixed.Limits(); l.Concurrency != 9 || l.Adaptive || l.RetryBudget != -1 {
		t.Errorf("fixed limits: got %+v, want 9, no budget", l)
	}
	rt, err := b.Router.Route("run")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rt.Do(ctx, &handlers.Request{TaskID: "t1", Type: "run"}); err != nil {
		t.Fatalf("call: %v", err)
	}
	if a := <-got; a != "Bearer wire-token" {
		t.Errorf("Authorization: got %q, want the token endpoint's token", a)
	}
	if l := model.Limits(); l.RetryBudget != 0.5 {
		t.Errorf("budget after one call at 0.5: got %g, want 0.5", l.RetryBudget)
	}
}
