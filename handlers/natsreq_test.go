package handlers_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/nats-io/nats.go"
)

func TestNATSNoResponders(t *testing.T) {
	_, nc := startNATS(t)
	be, err := handlers.NewNATS(handlers.NATSOptions{Name: "coder", Conn: nc, Subject: "svc.nobody"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = call(t, be, &handlers.Request{Payload: []byte("x")})
	if !errors.Is(err, handlers.ErrTransient) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("got %v, want transient ErrNoResponders", err)
	}
}

// rawService answers every request on subject with reply headers h and data.
func rawService(t *testing.T, nc *nats.Conn, subject string, h nats.Header, data []byte) {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Header: h, Data: data})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestNATSServiceErrors(t *testing.T) {
	s, client := startNATS(t)
	svc := connect(t, s)
	tests := []struct {
		name       string
		give       nats.Header
		data       []byte
		wantErr    error
		wantStatus int
		wantAfter  time.Duration
	}{
		{"ok", nats.Header{"X": {"1"}}, []byte("fine"), nil, 0, 0},
		{"400", nats.Header{handlers.HeaderServiceErrorCode: {"400"}, handlers.HeaderServiceError: {"bad input"}}, nil, handlers.ErrPermanent, 400, 0},
		{"404", nats.Header{handlers.HeaderServiceErrorCode: {"404"}, handlers.HeaderServiceError: {"no such model"}}, nil, handlers.ErrPermanent, 404, 0},
		{"408", nats.Header{handlers.HeaderServiceErrorCode: {"408"}, handlers.HeaderServiceError: {"timeout"}}, nil, handlers.ErrTransient, 408, 0},
		{"429", nats.Header{handlers.HeaderServiceErrorCode: {"429"}, handlers.HeaderServiceError: {"slow down"}, "Retry-After": {"12"}}, nil, handlers.ErrTransient, 429, 12 * time.Second},
		{"500", nats.Header{handlers.HeaderServiceErrorCode: {"500"}, handlers.HeaderServiceError: {"boom"}}, nil, handlers.ErrTransient, 500, 0},
		{"503", nats.Header{handlers.HeaderServiceErrorCode: {"503"}, handlers.HeaderServiceError: {"busy"}}, []byte("detail"), handlers.ErrTransient, 503, 0},
		{"unparsable code", nats.Header{handlers.HeaderServiceErrorCode: {"E_BAD"}, handlers.HeaderServiceError: {"odd"}}, nil, handlers.ErrTransient, 0, 0},
		{"description only", nats.Header{handlers.HeaderServiceError: {"no code"}}, nil, handlers.ErrTransient, 0, 0},
		{"status 503 no responders", nats.Header{"Status": {"503"}}, nil, handlers.ErrTransient, 0, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subject := "svc.raw." + string(rune('a'+i))
			rawService(t, svc, subject, tc.give, tc.data)
			be, err := handlers.NewNATS(handlers.NATSOptions{Name: "coder", Conn: client, Subject: subject})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := call(t, be, &handlers.Request{Payload: []byte("x")})
			if tc.wantErr == nil {
				if err != nil || string(resp.Body) != "fine" || resp.Header.Get("X") != "1" {
					t.Fatalf("got %v, %v, want body fine and header X", resp, err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want class %v", err, tc.wantErr)
			}
			if got := handlers.StatusOf(err); got != tc.wantStatus {
				t.Errorf("StatusOf: got %d, want %d", got, tc.wantStatus)
			}
			if got := handlers.RetryAfter(err); got != tc.wantAfter {
				t.Errorf("RetryAfter: got %v, want %v", got, tc.wantAfter)
			}
			if d := tc.give.Get(handlers.HeaderServiceError); d != "" && !strings.Contains(err.Error(), d) {
				t.Errorf("error %q: want the description %q", err, d)
			}
		})
	}
}

func TestNATSConnectionClosed(t *testing.T) {
	s, _ := startNATS(t)
	nc := connect(t, s)
	be, err := handlers.NewNATS(handlers.NATSOptions{Conn: nc, Subject: "svc.x"})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	_, err = call(t, be, &handlers.Request{Payload: []byte("x")})
	if !errors.Is(err, handlers.ErrTransient) || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("got %v, want transient ErrConnectionClosed", err)
	}
}

func TestNATSMaxPayloadPermanent(t *testing.T) {
	_, nc := startNATS(t)
	be, err := handlers.NewNATS(handlers.NATSOptions{Conn: nc, Subject: "svc.x"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = call(t, be, &handlers.Request{Payload: make([]byte, nc.MaxPayload()+1)})
	if !handlers.IsPermanent(err) || !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("got %v, want permanent ErrMaxPayload", err)
	}
}

func TestNATSDeadlineWithoutService(t *testing.T) {
	s, client := startNATS(t)
	// A subscriber that never answers: the call ends with its context.
	silent := connect(t, s)
	sub, err := silent.SubscribeSync("svc.silent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := silent.Flush(); err != nil {
		t.Fatal(err)
	}
	be, err := handlers.NewNATS(handlers.NATSOptions{Conn: client, Subject: "svc.silent"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = be.Call(ctx, &handlers.Request{Payload: []byte("x")})
	if !errors.Is(err, handlers.ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want transient DeadlineExceeded", err)
	}
}

func TestNewNATSBadOptions(t *testing.T) {
	_, nc := startNATS(t)
	for _, tc := range []struct {
		name string
		give handlers.NATSOptions
	}{
		{"no conn", handlers.NATSOptions{Subject: "a"}},
		{"no subject", handlers.NATSOptions{Conn: nc}},
		{"wildcard", handlers.NATSOptions{Conn: nc, Subject: "svc.*"}},
		{"full wildcard", handlers.NATSOptions{Conn: nc, Subject: "svc.>"}},
		{"empty token", handlers.NATSOptions{Conn: nc, Subject: "svc..x"}},
		{"space", handlers.NATSOptions{Conn: nc, Subject: "svc x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := handlers.NewNATS(tc.give); !errors.Is(err, handlers.ErrInvalidOption) {
				t.Fatalf("got %v, want ErrInvalidOption", err)
			}
		})
	}
}
