package dlq_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
)

func TestRedact(t *testing.T) {
	tests := []struct{ give, want string }{
		{"dial http://bob:hunter2@api.local/run: refused", "dial http://REDACTED@api.local/run: refused"},
		{"Authorization: Bearer abc.def-123 rejected", "Authorization: Bearer REDACTED rejected"},
		{"GET https://x/y?api_key=zzz&q=1 failed", "GET https://x/y?api_key=REDACTED&q=1 failed"},
		{"status 503: overloaded", "status 503: overloaded"},
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
