package handlers_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/nats-io/nats.go"
)

func newHTTP(t *testing.T, o handlers.HTTPOptions) *handlers.HTTP {
	t.Helper()
	be, err := handlers.NewHTTP(o)
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	t.Cleanup(func() { _ = be.Close() })
	return be
}

func call(t *testing.T, be handlers.Backend, req *handlers.Request) (*handlers.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return be.Call(ctx, req)
}

func TestHTTPStatusClassification(t *testing.T) {
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		give       int
		retryAfter string
		wantErr    error // nil, ErrTransient or ErrPermanent
		wantAfter  [2]time.Duration
	}{
		{give: 200},
		{give: 201},
		{give: 204},
		{give: 301, wantErr: handlers.ErrPermanent},
		{give: 400, wantErr: handlers.ErrPermanent},
		{give: 401, wantErr: handlers.ErrPermanent},
		{give: 404, wantErr: handlers.ErrPermanent},
		{give: 408, wantErr: handlers.ErrTransient},
		{give: 409, wantErr: handlers.ErrPermanent},
		{give: 422, wantErr: handlers.ErrPermanent},
		{give: 429, retryAfter: "30", wantErr: handlers.ErrTransient, wantAfter: [2]time.Duration{30 * time.Second, 30 * time.Second}},
		{give: 429, retryAfter: future, wantErr: handlers.ErrTransient, wantAfter: [2]time.Duration{80 * time.Second, 90 * time.Second}},
		{give: 429, retryAfter: "soon", wantErr: handlers.ErrTransient},
		{give: 503, retryAfter: "86400", wantErr: handlers.ErrTransient, wantAfter: [2]time.Duration{handlers.MaxRetryAfter, handlers.MaxRetryAfter}},
		{give: 500, wantErr: handlers.ErrTransient},
		{give: 501, wantErr: handlers.ErrPermanent},
		{give: 502, wantErr: handlers.ErrTransient},
		{give: 503, wantErr: handlers.ErrTransient},
		{give: 504, wantErr: handlers.ErrTransient},
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.give)+"/"+tc.retryAfter, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.give == 301 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(tc.give)
				if tc.give != 204 {
					_, _ = w.Write([]byte("answer " + strings.Repeat("x", 2000)))
				}
			}))
			t.Cleanup(srv.Close)
			be := newHTTP(t, handlers.HTTPOptions{Name: "svc", URL: srv.URL})
			resp, err := call(t, be, &handlers.Request{Payload: []byte("p")})
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("got error %v, want nil", err)
				}
				if tc.give != 204 && !strings.HasPrefix(string(resp.Body), "answer ") {
					t.Errorf("body: got %.20q, want the answer", resp.Body)
				}
				if got := resp.Header.Get("Content-Type"); got != "text/plain" {
					t.Errorf("response Content-Type: got %q, want text/plain", got)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got error %v, want class %v", err, tc.wantErr)
			}
			if got := handlers.StatusOf(err); got != tc.give {
				t.Errorf("StatusOf: got %d, want %d", got, tc.give)
			}
			if got := handlers.RetryAfter(err); got < tc.wantAfter[0] || got > tc.wantAfter[1] {
				t.Errorf("RetryAfter: got %v, want in %v", got, tc.wantAfter)
			}
			var he *handlers.Error
			if !errors.As(err, &he) || he.Backend != "svc" {
				t.Errorf("got %#v, want *Error with Backend svc", err)
			}
			if !strings.Contains(err.Error(), "answer xxx") || len(err.Error()) > 600 {
				t.Errorf("message: got %d bytes %.80q, want the start of the body, at most ~512 bytes", len(err.Error()), err.Error())
			}
		})
	}
}

func TestHTTPConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	be := newHTTP(t, handlers.HTTPOptions{Name: "down", URL: "http://alice:s3cret-pw@" + addr + "/run?api_key=k3y"})
	start := time.Now()
	_, err = call(t, be, &handlers.Request{Payload: []byte("p")})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refused call took %v, want well under 2s", d)
	}
	if !errors.Is(err, handlers.ErrTransient) || handlers.IsPermanent(err) {
		t.Fatalf("got %v, want a transient error", err)
	}
	for _, secret := range []string{"alice", "s3cret-pw", "k3y"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains URL secret %q", err, secret)
		}
	}
}

// headerServer records the last request's headers.
type headerServer struct {
	*httptest.Server
	mu   sync.Mutex
	last http.Header
}

func newHeaderServer(t *testing.T, status int) *headerServer {
	hs := &headerServer{}
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.mu.Lock()
		hs.last = r.Header.Clone()
		hs.mu.Unlock()
		w.WriteHeader(status)
		// A careless service that echoes credentials into its error page.
		_, _ = w.Write([]byte("denied for " + r.Header.Get("Authorization")))
	}))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *headerServer) header() http.Header {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.last
}

func TestHTTPRequestHeaders(t *testing.T) {
	hs := newHeaderServer(t, http.StatusOK)
	be := newHTTP(t, handlers.HTTPOptions{URL: hs.URL, Headers: map[string]string{"X-Api-Version": "2", "X-Custom": "static-wins"},
		ForwardHeaders: []string{"X-Custom", "X-Forwarded"}})
	tests := []struct {
		name   string
		give   nats.Header
		header string
		want   string
	}{
		{"default content type", nil, "Content-Type", "application/octet-stream"},
		{"task content type", nats.Header{"content-type": {"application/json"}}, "Content-Type", "application/json"},
		{"static header", nil, "X-Api-Version", "2"},
		{"static beats task", nats.Header{"X-Custom": {"from-task"}}, "X-Custom", "static-wins"},
		{"forwarded", nats.Header{"x-forwarded": {"from-task"}}, "X-Forwarded", "from-task"},
		{"not forwarded", nats.Header{"X-Other": {"from-task"}}, "X-Other", ""},
		{"trace context", nats.Header{"traceparent": {"00-abc-def-01"}}, "Traceparent", "00-abc-def-01"},
		{"no task authorization", nats.Header{"Authorization": {"Bearer evil"}}, "Authorization", ""},
		{"no nats headers", nats.Header{"Nats-Msg-Id": {"m1"}, "nats-expected-stream": {"X"}}, "Nats-Msg-Id", ""},
		{"task id not spoofed", nats.Header{"Task-Id": {"spoof"}}, "Task-Id", "t-9"},
		{"attempt", nil, "Task-Attempt", "2"},
		{"no transport headers", nats.Header{"Connection": {"close"}, "Content-Length": {"99"}}, "Connection", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := call(t, be, &handlers.Request{TaskID: "t-9", Type: "x", Attempt: 2, Header: tc.give, Payload: []byte("{}")}); err != nil {
				t.Fatal(err)
			}
			if got := hs.header().Get(tc.header); got != tc.want {
				t.Errorf("%s: got %q, want %q", tc.header, got, tc.want)
			}
		})
	}
}

func TestHTTPBearerTokenFile(t *testing.T) {
	hs := newHeaderServer(t, http.StatusOK)
	path := filepath.Join(t.TempDir(), "token")
	writeToken := func(tok string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	writeToken("first-token", t0)
	be := newHTTP(t, handlers.HTTPOptions{URL: hs.URL, BearerTokenFile: path})
	authOf := func() string {
		t.Helper()
		if _, err := call(t, be, &handlers.Request{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		return hs.header().Get("Authorization")
	}
	if got := authOf(); got != "Bearer first-token" {
		t.Fatalf("Authorization: got %q, want Bearer first-token", got)
	}

	writeToken("second-token", t0.Add(time.Minute)) // rotation: new content, new mtime
	deadline := time.Now().Add(5 * time.Second)
	for got := authOf(); got != "Bearer second-token"; got = authOf() {
		if time.Now().After(deadline) {
			t.Fatalf("Authorization after rotation: got %q, want Bearer second-token", got)
		}
	}

	// While the file is gone (mid-rotation), the last good token is used.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if got := authOf(); got != "Bearer second-token" {
		t.Errorf("Authorization with file missing: got %q, want the last good token", got)
	}
}

func TestHTTPBearerTokenEnv(t *testing.T) {
	hs := newHeaderServer(t, http.StatusUnauthorized)
	env := map[string]string{"FLOW_TOKEN": "  env-secret-token \n"}
	be := newHTTP(t, handlers.HTTPOptions{URL: hs.URL, BearerTokenEnv: "FLOW_TOKEN", Getenv: func(k string) string { return env[k] }})
	_, err := call(t, be, &handlers.Request{Payload: []byte("x")})
	if got := hs.header().Get("Authorization"); got != "Bearer env-secret-token" {
		t.Errorf("Authorization: got %q, want Bearer env-secret-token", got)
	}
	if !handlers.IsPermanent(err) || handlers.StatusOf(err) != 401 {
		t.Fatalf("got %v, want permanent 401", err)
	}
	if strings.Contains(err.Error(), "env-secret-token") {
		t.Errorf("error %q contains the bearer token", err)
	}
	if !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("error %q: want the echoed token replaced by [REDACTED]", err)
	}
}

func TestNewHTTPBadOptions(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give handlers.HTTPOptions
	}{
		{"no url", handlers.HTTPOptions{}},
		{"bad scheme", handlers.HTTPOptions{URL: "ftp://x/y"}},
		{"no host", handlers.HTTPOptions{URL: "http:///run"}},
		{"unparsable url", handlers.HTTPOptions{URL: "http://user:pw@[::1/x"}},
		{"both tokens", handlers.HTTPOptions{URL: "http://x", BearerTokenFile: empty, BearerTokenEnv: "T"}},
		{"missing token file", handlers.HTTPOptions{URL: "http://x", BearerTokenFile: filepath.Join(dir, "nope")}},
		{"empty token file", handlers.HTTPOptions{URL: "http://x", BearerTokenFile: empty}},
		{"unset token env", handlers.HTTPOptions{URL: "http://x", BearerTokenEnv: "T", Getenv: func(string) string { return "" }}},
		{"bad header name", handlers.HTTPOptions{URL: "http://x", Headers: map[string]string{"X Y": "1"}}},
		{"bad header value", handlers.HTTPOptions{URL: "http://x", Headers: map[string]string{"X": "a\nb"}}},
		{"transport header", handlers.HTTPOptions{URL: "http://x", Headers: map[string]string{"Content-Length": "1"}}},
		{"auth conflict", handlers.HTTPOptions{URL: "http://x", Headers: map[string]string{"Authorization": "x"},
			BearerTokenEnv: "T", Getenv: func(string) string { return "tok" }}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := handlers.NewHTTP(tc.give)
			if !errors.Is(err, handlers.ErrInvalidOption) {
				t.Fatalf("got %v, want ErrInvalidOption", err)
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("error %q contains the URL's userinfo", err)
			}
		})
	}
}
