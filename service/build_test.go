package service

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/handlers"
)

// A backend's forward_headers in the config decide which task headers its
// service receives, for HTTP and NATS backends alike.
func TestBuildForwardHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
	t.Cleanup(srv.Close)

	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
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
