package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/internal/testkit"
)

func TestResult(t *testing.T) {
	e := startServer(t)
	storeResult(t, e, "code.generate", "r-1", `{"answer":42}`)
	storeResult(t, e, "echo", "r-2", "ends with newline\n")
	tests := []struct {
		name       string
		give       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"found", []string{"result", "code.generate", "r-1"}, 0, "{\"answer\":42}\n", ""},
		{"body newline kept", []string{"result", "echo", "r-2"}, 0, "ends with newline\n", ""},
		{"headers", []string{"result", "code.generate", "r-1", "--headers"}, 0,
			"Task-Backend: fake\nTask-Duration: 2ms\nTask-Id: r-1\nTask-Status: ok\nTask-Type: code.generate\n\n{\"answer\":42}\n", ""},
		{"not found", []string{"result", "echo", "nope"}, 1, "", "publisher: no result for echo nope\n"},
		{"other type", []string{"result", "echo", "r-1"}, 1, "", "publisher: no result for echo r-1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", append([]string{"--nats-url", e.url}, tt.give...)...)
			if r.code != tt.wantCode || r.stdout != tt.wantStdout || r.stderr != tt.wantStderr {
				t.Errorf("got code %d, stdout %q, stderr %q; want %d, %q, %q",
					r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

func TestResultNoStream(t *testing.T) {
	e := startServer(t)
	r := runCmd(t, "", "--nats-url", e.url, "--prefix", "none", "result", "echo", "x")
	wantFail(t, r, exitFailure, "stream none_RESULTS not found")
}

// consumersOn reports how many consumers the stream has: `results` is
// ready to see new results once its ordered consumer exists.
func consumersOn(t *testing.T, e *testEnv, stream string) int {
	s, err := e.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Consumers
}

func TestResultsStreamsNew(t *testing.T) {
	e := startServer(t)
	storeResult(t, e, "echo", "old-1", "before")
	stdout, stderr, stop := runAsync(t, "--nats-url", e.url, "results", "echo")
	testkit.Eventually(t, 5*time.Second, "the results consumer", func() (bool, string) { return consumersOn(t, e, "RESULTS") > 0, "" })
	storeResult(t, e, "other", "o-1", "another type")
	storeResult(t, e, "echo", "new-1", "line one\nline two\t"+strings.Repeat("é", 150))
	storeResult(t, e, "echo", "new-2", "\x00bin\xff")
	testkit.Eventually(t, 5*time.Second, "two result lines", func() (bool, string) { return strings.Count(stdout.String(), "\n") >= 2, stdout.String() })
	if code := stop(); code != 0 {
		t.Fatalf("exit code %d after interrupt, want 0; stderr %q", code, stderr.String())
	}
	want := "echo new-1 ok fake 2ms line one\\nline two\\t" + strings.Repeat("é", 91) + "…\n" +
		"echo new-2 ok fake 2ms \\x00bin\\xff\n"
	if got := stdout.String(); got != want {
		t.Errorf("stdout\n%q\nwant\n%q", got, want)
	}
	if stderr.String() != "" {
		t.Errorf("stderr %q, want nothing", stderr.String())
	}
}

func TestResultsAllJSON(t *testing.T) {
	e := startServer(t)
	storeResult(t, e, "echo", "j-1", `{"a":1}`)
	storeResult(t, e, "code.generate", "j-2", "text")
	// A result from another tool, without Breakwater's headers.
	if _, err := e.js.PublishMsg(t.Context(), &nats.Msg{Subject: "results.code.generate.j-3", Data: []byte{0xff}}); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, stop := runAsync(t, "--nats-url", e.url, "results", "--all", "--json")
	testkit.Eventually(t, 5*time.Second, "three result lines", func() (bool, string) { return strings.Count(stdout.String(), "\n") >= 3, stdout.String() })
	if code := stop(); code != 0 {
		t.Fatalf("exit code %d, want 0; stderr %q", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	type row struct {
		Subject    string              `json:"subject"`
		Seq        uint64              `json:"seq"`
		Type       string              `json:"type"`
		ID         string              `json:"id"`
		Status     string              `json:"status"`
		Headers    map[string][]string `json:"headers"`
		Body       *string             `json:"body"`
		BodyBase64 []byte              `json:"body_base64"`
	}
	tests := []struct {
		typ, id, status string
		body            string
		base64          []byte
	}{
		{"echo", "j-1", "ok", `{"a":1}`, nil},
		{"code.generate", "j-2", "ok", "text", nil},
		{"code.generate", "j-3", "", "", []byte{0xff}},
	}
	if len(lines) != len(tests) {
		t.Fatalf("got %d lines, want %d: %q", len(lines), len(tests), lines)
	}
	for i, tt := range tests {
		var got row
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, lines[i])
		}
		if got.Type != tt.typ || got.ID != tt.id || got.Status != tt.status || got.Seq != uint64(i+1) {
			t.Errorf("line %d: type %q id %q status %q seq %d, want %q %q %q %d",
				i, got.Type, got.ID, got.Status, got.Seq, tt.typ, tt.id, tt.status, i+1)
		}
		switch {
		case tt.base64 != nil:
			if got.Body != nil || string(got.BodyBase64) != string(tt.base64) {
				t.Errorf("line %d: body %v base64 %q, want base64 %q", i, got.Body, got.BodyBase64, tt.base64)
			}
		case got.Body == nil || *got.Body != tt.body:
			t.Errorf("line %d: body %v, want %q", i, got.Body, tt.body)
		}
		if tt.status != "" && got.Headers["Task-Backend"][0] != "fake" {
			t.Errorf("line %d: headers %v, want Task-Backend fake", i, got.Headers)
		}
	}
}

func TestAppendEscaped(t *testing.T) {
	tests := []struct {
		give  string
		limit int
		want  string
	}{
		{"plain", 10, "plain"},
		{"a\r\nb", 10, `a\r\nb`},
		{"0123456789abc", 10, "0123456789…"},
		{"ééé", 5, "éé…"}, // never half a rune
		{"\x1b[0m", 10, `\x1b[0m`},
		{"ok\xfe", 10, `ok\xfe`},
		{"", 10, ""},
	}
	for _, tt := range tests {
		if got := string(appendEscaped(nil, []byte(tt.give), tt.limit)); got != tt.want {
			t.Errorf("appendEscaped(%q, %d) = %q, want %q", tt.give, tt.limit, got, tt.want)
		}
	}
}
