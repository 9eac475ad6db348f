package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// Bad ui command lines exit 2 with the reason, before connecting.
func TestUIUsage(t *testing.T) {
	t.Parallel()
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"actions off loopback without a token", []string{"ui", "--http", "0.0.0.0:0", "--allow-actions"}, "needs --auth-token-file"},
		{"actions on all interfaces without a token", []string{"ui", "--http", ":0", "--allow-actions"}, "needs --auth-token-file"},
		{"no port", []string{"ui", "--http", "127.0.0.1"}, "--http"},
		{"missing token file", []string{"ui", "--auth-token-file", filepath.Join(t.TempDir(), "nope")}, "--auth-token-file"},
		{"empty token file", []string{"ui", "--auth-token-file", empty}, "is empty"},
		{"bad config", []string{"ui", "--config", empty + "-missing"}, "--config"},
		{"argument", []string{"ui", "extra"}, "want no arguments"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantFail(t, runCmd(t, "", append([]string{"--nats-url", "nats://127.0.0.1:1"}, tt.args...)...), exitUsage, tt.want)
		})
	}
}

// publisher ui serves the console until its context ends, then exits 0.
func TestUIServes(t *testing.T) {
	t.Parallel()
	e := startServer(t)
	stdout, stderr, stop := runAsync(t, "--nats-url", e.url, "ui", "--http", "127.0.0.1:0")
	addr := regexp.MustCompile(`console on (http://\S+) \(read-only\)`)
	var base string
	testkit.Eventually(t, 20*time.Second, "the console's address", func() (bool, string) {
		if m := addr.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
			return true, ""
		}
		return false, ""
	})
	resp, err := http.Get(base + "/api/streams")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"TASKS"`) {
		t.Errorf("GET /api/streams: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Post(base+"/api/dlq/replay", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST without --allow-actions: %d, want 403", resp.StatusCode)
	}
	if code := stop(); code != exitOK {
		t.Errorf("exit %d, want 0; stderr %q", code, stderr.String())
	}
}
