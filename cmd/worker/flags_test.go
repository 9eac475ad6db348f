package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name         string
		give         []string
		env          map[string]string
		wantEmbedded string
		wantURL      string
		wantErr      string
	}{
		{name: "embedded default dir", give: []string{"--embedded"}, wantEmbedded: "./data"},
		{name: "embedded dir", give: []string{"--embedded=/tmp/x"}, wantEmbedded: "/tmp/x"},
		{name: "NATS_URL", env: map[string]string{"NATS_URL": "nats://a:1"}, wantURL: "nats://a:1"},
		{name: "flag beats NATS_URL", give: []string{"--nats-url", "nats://b:2"}, env: map[string]string{"NATS_URL": "nats://a:1"}, wantURL: "nats://b:2"},
		{name: "unknown flag", give: []string{"--bogus"}, wantErr: "unknown flag: --bogus"},
		{name: "stray argument", give: []string{"run"}, wantErr: `unexpected argument "run"`},
		{name: "bad log level", give: []string{"--log-level", "loud"}, wantErr: "invalid --log-level"},
		{name: "bad fsync", give: []string{"--embedded-fsync", "never"}, wantErr: "invalid --embedded-fsync"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseFlags(tt.give, env(tt.env), &bytes.Buffer{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.embedded != tt.wantEmbedded || f.natsURL != tt.wantURL {
				t.Errorf("got embedded %q url %q, want %q %q", f.embedded, f.natsURL, tt.wantEmbedded, tt.wantURL)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		give []string
		want int
	}{
		{[]string{"--help"}, exitOK},
		{[]string{"--bogus"}, exitUsage},
		{[]string{"--config", "/nonexistent/worker.yaml"}, exitError},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		got := run(context.Background(), tt.give, func(string) string { return "" }, &bytes.Buffer{}, &stderr)
		if got != tt.want {
			t.Errorf("run(%q) = %d, want %d (stderr %q)", tt.give, got, tt.want, stderr.String())
		}
		if tt.want != exitOK && strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("run(%q) stderr is not one line: %q", tt.give, stderr.String())
		}
	}
}
