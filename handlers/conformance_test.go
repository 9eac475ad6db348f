package handlers_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/handlers/handlertest"
)

func TestConformanceBuiltin(t *testing.T) {
	builtin := func(t *testing.T, name string) handlers.Backend {
		t.Helper()
		be, err := handlers.Builtin(name)
		if err != nil {
			t.Fatal(err)
		}
		return be
	}
	handlertest.Run(t, func(t *testing.T, b handlertest.Behavior) handlers.Backend {
		var be handlers.Backend
		switch b.Kind {
		case handlertest.Echo:
			be = builtin(t, "echo")
		case handlertest.FailTransient:
			be = builtin(t, "unavailable")
		case handlertest.FailPermanent:
			be = builtin(t, "fail")
		case handlertest.Slow:
			// sleep takes its duration from the payload: give it Delay and
			// answer with the caller's payload.
			sleep := builtin(t, "sleep")
			be = handlers.BackendFunc(func(ctx context.Context, r *handlers.Request) (*handlers.Response, error) {
				sr := *r
				sr.Payload = []byte(b.Delay.String())
				if _, err := sleep.Call(ctx, &sr); err != nil {
					return nil, err
				}
				return &handlers.Response{Body: r.Payload}, nil
			})
		default:
			t.Fatalf("builtin cannot behave as %v", b.Kind)
		}
		if b.OnRequest == nil {
			return be
		}
		return handlers.BackendFunc(func(ctx context.Context, r *handlers.Request) (*handlers.Response, error) {
			b.OnRequest()
			return be.Call(ctx, r)
		})
	}, handlertest.Features{})
}

// httpFake serves Behavior b over HTTP.
func httpFake(t *testing.T, b handlertest.Behavior) *httptest.Server {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.OnRequest != nil {
			b.OnRequest()
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		switch b.Kind {
		case handlertest.Echo:
			_, _ = w.Write(body)
		case handlertest.EchoHeaders:
			_, _ = w.Write(handlertest.EncodeHeaders(r.Header))
		case handlertest.FailTransient:
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		case handlertest.FailPermanent:
			http.Error(w, "payload rejected", http.StatusBadRequest)
		case handlertest.Slow:
			timer := time.NewTimer(b.Delay)
			defer timer.Stop()
			select {
			case <-timer.C:
				_, _ = w.Write(body)
			case <-r.Context().Done():
			case <-done:
			}
		case handlertest.RetryAfter:
			w.Header().Set("Retry-After", strconv.Itoa(int(b.Delay/time.Second)))
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) }) // runs first: release slow handlers
	return srv
}

func TestConformanceHTTP(t *testing.T) {
	handlertest.Run(t, func(t *testing.T, b handlertest.Behavior) handlers.Backend {
		srv := httpFake(t, b)
		be, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "fake", URL: srv.URL + "/run", ForwardHeaders: b.ForwardHeaders})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = be.Close() })
		return be
	}, handlertest.Features{HeadersPassed: true, RetryAfter: true, Status: true})
}

func TestConformanceNATS(t *testing.T) {
	s, client := startNATS(t)
	svcConn := s.Connect(t)
	var seq atomic.Int64
	handlertest.Run(t, func(t *testing.T, b handlertest.Behavior) handlers.Backend {
		subject := fmt.Sprintf("svc.conformance.%d", seq.Add(1))
		done := make(chan struct{})
		svc, err := micro.AddService(svcConn, micro.Config{
			Name:    "conformance",
			Version: "1.0.0",
			Endpoint: &micro.EndpointConfig{Subject: subject, Handler: micro.HandlerFunc(func(req micro.Request) {
				if b.OnRequest != nil {
					b.OnRequest()
				}
				switch b.Kind {
				case handlertest.Echo:
					_ = req.Respond(req.Data())
				case handlertest.EchoHeaders:
					_ = req.Respond(handlertest.EncodeHeaders(req.Headers()))
				case handlertest.FailTransient:
					_ = req.Error("503", "down for maintenance", nil)
				case handlertest.FailPermanent:
					_ = req.Error("400", "payload rejected", nil)
				case handlertest.Slow:
					// A micro handler cannot see the caller give up: wait
					// for the delay or the end of the test.
					timer := time.NewTimer(b.Delay)
					defer timer.Stop()
					select {
					case <-timer.C:
						_ = req.Respond(req.Data())
					case <-done:
					}
				case handlertest.RetryAfter:
					hint := micro.Headers{"Retry-After": {strconv.Itoa(int(b.Delay / time.Second))}}
					_ = req.Error("503", "busy", nil, micro.WithHeaders(hint))
				}
			})},
		})
		if err != nil {
			t.Fatalf("add service: %v", err)
		}
		// The subscription must reach the server before the first request.
		if err := svcConn.Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
		t.Cleanup(func() { close(done) })
		be, err := handlers.NewNATS(handlers.NATSOptions{Name: "fake", Conn: client, Subject: subject, ForwardHeaders: b.ForwardHeaders})
		if err != nil {
			t.Fatal(err)
		}
		return be
	}, handlertest.Features{HeadersPassed: true, RetryAfter: true, Status: true})
}
