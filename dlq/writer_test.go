package dlq_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

func TestRedact(t *testing.T) {
	tests := []struct{ give, want string }{
		{"dial http://bob:hunter2@api.local/run: refused", "dial http://REDACTED@api.local/run: refused"},
		{"Authorization: Bearer abc.def-123 rejected", "Authorization: Bearer REDACTED rejected"},
		{"GET https://x/y?api_key=zzz&q=1 failed", "GET https://x/y?api_key=REDACTED&q=1 failed"},
		{"status 503: overloaded", "status 503: overloaded"},
		{"POST https://h/run?token=t0k&x=1: 401", "POST https://h/run?token=REDACTED&x=1: 401"},
		{"GET http://h/?access_token=a.b.c EOF", "GET http://h/?access_token=REDACTED EOF"},
		{"nats://user:pw@nats:4222 refused", "nats://REDACTED@nats:4222 refused"},
		{"got bearer eyJhbGciOi.x_y-z in reply", "got bearer REDACTED in reply"},
		{"no tokens here: tokenizer failed", "no tokens here: tokenizer failed"},
	}
	for _, tt := range tests {
		if got := dlq.Redact(tt.give); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

func TestHeader(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	w := dlq.NewWriter(nil, dlq.WriterOptions{Topology: bus.Topology{}, Worker: "w7", Now: func() time.Time { return now }})
	orig := nats.Header{"Nats-Msg-Id": {"m1"}, "X-Trace": {"a"}, "Authorization": {"Bearer sekrit"}, "Dlq-Replays": {"2"}}
	h := w.Header(&dlq.Entry{
		ID: "m1", Type: "echo", Subject: "tasks.echo", Seq: 9, Header: orig, Reason: dlq.Exhausted,
		Err: errors.New(strings.Repeat("x", 2000)), Attempts: 3, Backends: []string{"a", "b"},
	})
	want := map[string]string{
		"Nats-Msg-Id": "m1", "X-Trace": "a", "Task-Id": "m1", "Dlq-Reason": "exhausted", "Dlq-Attempts": "3",
		"Dlq-Backends": "a,b", "Dlq-Original-Subject": "tasks.echo", "Dlq-Original-Seq": "9",
		"Dlq-Failed-At": "2026-11-22T12:00:00Z", "Dlq-Worker": "w7", "Dlq-Replays": "2", "Authorization": "",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	if n := len(h.Get("Dlq-Error")); n != dlq.MaxErrorLen {
		t.Errorf("Dlq-Error length: got %d, want %d", n, dlq.MaxErrorLen)
	}
	if orig.Get("Dlq-Reason") != "" {
		t.Error("Header modified the original headers")
	}
}

func TestRecords(t *testing.T) {
	at := time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)
	secret := errors.New("GET https://api/x?api_key=k3y: refused")
	attempts := []resilience.Attempt{
		{Backend: "a", Start: at, Duration: 1500 * time.Microsecond, Err: &handlers.Error{Class: handlers.ErrTransient, Status: 503, Err: secret}},
		{Backend: "b", Start: at.Add(time.Second), Duration: time.Millisecond, Err: &handlers.Error{Class: handlers.ErrPermanent, Status: 422}},
		{Backend: "c", Start: at.Add(2 * time.Second), Duration: time.Millisecond, Err: fmt.Errorf("check: %w", resilience.ErrInvalidResult)},
		{Backend: "d", Start: at.Add(3 * time.Second), Duration: time.Millisecond},
		{Backend: "e", Start: at.Add(4 * time.Second), Duration: time.Millisecond, Err: errors.New("unclassified")},
	}
	want := []struct {
		class  string
		status int
	}{{"transient", 503}, {"permanent", 422}, {"invalid", 0}, {"ok", 0}, {"transient", 0}}
	got := dlq.Records(attempts, 3, "w9")
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for k, w := range want {
		r := got[k]
		if r.Class != w.class || r.Status != w.status || r.Delivery != 3 || r.Worker != "w9" ||
			r.Backend != attempts[k].Backend || !r.At.Equal(attempts[k].Start) {
			t.Errorf("record %d = %+v, want class %s status %d", k, r, w.class, w.status)
		}
	}
	if got[0].Duration != "1.5ms" || strings.Contains(got[0].Error, "k3y") || !strings.Contains(got[0].Error, "api_key=REDACTED") {
		t.Errorf("record 0 duration %q, error %q", got[0].Duration, got[0].Error)
	}
}
