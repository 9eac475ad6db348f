package client

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/bus"
)

func TestResultKey(t *testing.T) {
	tests := []struct {
		prefix, subject string
		hdr             nats.Header
		wantType        string
		wantID          string
	}{
		{"", "results.echo.a1", nil, "echo", "a1"},
		{"", "results.code.generate.a2", nil, "code.generate", "a2"},
		{"acme", "acme.results.x.y.z.a3", nil, "x.y.z", "a3"},
		{"", "results.echo.a4", nats.Header{"Task-Type": {"hdr"}, "Task-Id": {"hid"}}, "hdr", "hid"},
		{"", "elsewhere", nil, "", ""},
	}
	for _, tt := range tests {
		c := &Client{o: options{topo: bus.Topology{Prefix: tt.prefix}}}
		typ, id := c.resultKey(tt.subject, tt.hdr)
		if typ != tt.wantType || id != tt.wantID {
			t.Errorf("resultKey(%q, %q) = %q, %q; want %q, %q", tt.prefix, tt.subject, typ, id, tt.wantType, tt.wantID)
		}
	}
}
