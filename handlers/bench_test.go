package handlers_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/breakwater/breakwater/handlers"
	"github.com/nats-io/nats.go"
)

// benchParallelism × GOMAXPROCS goroutines call at once; with 2 CPUs that
// is 64, the worker's default concurrency.
const benchParallelism = 32

var benchPayload = bytes.Repeat([]byte("x"), 128)

func echoServer(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkDirectHTTP is the anchor: a plain, equally pooled http.Client
// POST to the same kind of server with the same headers on the wire as
// BenchmarkHTTPCall (the server parses them in this process too), reading
// the whole body. The difference is the wrapper's own cost.
func BenchmarkDirectHTTP(b *testing.B) {
	srv := echoServer(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
	b.Cleanup(client.CloseIdleConnections)
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, bytes.NewReader(benchPayload))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			req.Header.Set("Task-Id", "t-1")
			req.Header.Set("Task-Type", "bench")
			req.Header.Set("Task-Attempt", "1")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
		}
	})
}

func BenchmarkHTTPCall(b *testing.B) {
	srv := echoServer(b)
	be, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "bench", URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	req := &handlers.Request{TaskID: "t-1", Type: "bench", Attempt: 1, Payload: benchPayload,
		Header: nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "Nats-Msg-Id": {"m-1"}}}
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := be.Call(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkBuiltinEcho(b *testing.B) {
	be, err := handlers.Builtin("echo")
	if err != nil {
		b.Fatal(err)
	}
	req := &handlers.Request{TaskID: "t-1", Type: "bench", Attempt: 1, Payload: benchPayload}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := be.Call(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMatchHeader: the pattern shapes of forward_headers against a
// usual header name, against a 1 MiB name a hostile task could send, and
// the one costly shape (text between two stars, searched for) against the
// longest name a backend forwards (1 KiB; longer ones are dropped first).
func BenchmarkMatchHeader(b *testing.B) {
	huge := "X-" + strings.Repeat("a", 1<<20)
	for _, bc := range []struct{ name, pattern, header string }{
		{"exact", "X-Request-Id", "x-request-id"},
		{"prefix", "X-Request-*", "X-Request-Source"},
		{"middle", "X-*-Id", "X-Request-Id"},
		{"prefix/huge", "X-Request-*", huge},
		{"suffix/huge", "*-" + strings.Repeat("a", 250) + "b", huge},
		{"middle/1KiB", "*" + strings.Repeat("a", 250) + "b*", huge[:1024]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				handlers.MatchHeader(bc.pattern, bc.header)
			}
		})
	}
}
