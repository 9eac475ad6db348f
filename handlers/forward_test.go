package handlers_test

import (
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/handlers"
)

// taskHeaders is what a publisher may put on a task: trace context, a
// content type, and things that must not reach a service unless its config
// names them (credentials, cookies, identity and proxy headers, broker
// headers, spoofed Task-* headers).
func taskHeaders() nats.Header {
	h := nats.Header{
		"traceparent":          {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"tracestate":           {"congo=t61rcWkgMzE"},
		"baggage":              {"userId=alice"},
		"Content-Type":         {"application/json"},
		"Cookie":               {"session=stolen"},
		"X-Api-Key":            {"publisher-key"},
		"X-Forwarded-For":      {"10.0.0.1"},
		"X-User-Id":            {"admin"},
		"Authorization":        {"Bearer publisher"},
		"Proxy-Authorization":  {"Basic cHVibGlzaGVy"},
		"X-Authorization-Via":  {"hint"},
		"Nats-Msg-Id":          {"m-1"},
		"nats-expected-stream": {"TASKS"},
		"Task-Id":              {"spoofed"},
		"task-attempt":         {"99"},
		"Task-Reply-To":        {"_INBOX.x"},
		"X-Request-Id":         {"r-1"},
		"X-Request-Source":     {"cli", "batch"},
		"X-Requested-With":     {"fetch"},
		"Connection":           {"close"},
	}
	// Names a service must not get even from "*": a non-ASCII look-alike of
	// tracestate (Unicode folding would call it equal), a name that is not
	// a token, and one longer than any service takes.
	h["trace\u017ftate"] = []string{"look-alike"}
	h["X-Request Id"] = []string{"not a header name"}
	h["X-Request-"+strings.Repeat("x", 1100)] = []string{"too long a name"}
	return h
}

// forwardCases: a backend's forward_headers → every header the service
// receives (names in lower case), for taskHeaders and Request{TaskID:
// "t-7", Type: "code.generate", Attempt: 2}.
var forwardCases = []struct {
	name    string
	forward []string
	want    map[string][]string
}{
	{"none configured: trace context and content type only", nil, map[string][]string{}},
	{"a pattern", []string{"X-Request-*"}, map[string][]string{
		"x-request-id": {"r-1"}, "x-request-source": {"cli", "batch"}}},
	{"a name, in another case", []string{"x-user-id"}, map[string][]string{"x-user-id": {"admin"}}},
	{"names the operator chose", []string{"Cookie", "X-Api-Key", "Task-Reply-To"}, map[string][]string{
		"cookie": {"session=stolen"}, "x-api-key": {"publisher-key"}, "task-reply-to": {"_INBOX.x"}}},
	{"credentials stay out of a matching pattern", []string{"*Authorization*"}, map[string][]string{
		"x-authorization-via": {"hint"}}},
	{"everything still keeps out credentials, Nats-* and spoofed Task-*", []string{"*"}, map[string][]string{
		"cookie": {"session=stolen"}, "x-api-key": {"publisher-key"}, "x-forwarded-for": {"10.0.0.1"},
		"x-user-id": {"admin"}, "x-authorization-via": {"hint"}, "task-reply-to": {"_INBOX.x"},
		"x-request-id": {"r-1"}, "x-request-source": {"cli", "batch"}, "x-requested-with": {"fetch"}}},
}

// wantForwarded adds what every backend call carries to a case's want.
func wantForwarded(extra map[string][]string) map[string][]string {
	want := map[string][]string{
		"traceparent":  {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"tracestate":   {"congo=t61rcWkgMzE"},
		"baggage":      {"userId=alice"},
		"content-type": {"application/json"},
		"task-id":      {"t-7"},
		"task-type":    {"code.generate"},
		"task-attempt": {"2"},
	}
	maps.Copy(want, extra)
	return want
}

func lowerKeys(h map[string][]string, skip ...string) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		if lk := strings.ToLower(k); !slices.Contains(skip, lk) {
			out[lk] = append(out[lk], v...)
		}
	}
	return out
}

func diffHeaders(t *testing.T, got, want map[string][]string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if w, ok := want[k]; !ok {
			t.Errorf("service received %s = %q, want it kept out", k, got[k])
		} else if !slices.Equal(got[k], w) {
			t.Errorf("service received %s = %q, want %q", k, got[k], w)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if _, ok := got[k]; !ok {
			t.Errorf("service did not receive %s, want %q", k, want[k])
		}
	}
}

func forwardRequest() *handlers.Request {
	return &handlers.Request{TaskID: "t-7", Type: "code.generate", Attempt: 2, Payload: []byte(`{}`), Header: taskHeaders()}
}

func TestHTTPForwardHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	}))
	t.Cleanup(srv.Close)
	for _, tc := range forwardCases {
		t.Run(tc.name, func(t *testing.T) {
			be := newHTTP(t, handlers.HTTPOptions{Name: "svc", URL: srv.URL, ForwardHeaders: tc.forward})
			if _, err := call(t, be, forwardRequest()); err != nil {
				t.Fatal(err)
			}
			// What Go's client adds itself is not the task's doing.
			diffHeaders(t, lowerKeys(<-got, "user-agent", "accept-encoding", "content-length"), wantForwarded(tc.want))
		})
	}
}

func TestNATSForwardHeaders(t *testing.T) {
	_, nc := startNATS(t)
	got := make(chan nats.Header, 1)
	sub, err := nc.Subscribe("svc.forward", func(m *nats.Msg) {
		got <- m.Header
		_ = m.Respond([]byte("ok"))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	for _, tc := range forwardCases {
		t.Run(tc.name, func(t *testing.T) {
			be, err := handlers.NewNATS(handlers.NATSOptions{Name: "svc", Conn: nc, Subject: "svc.forward", ForwardHeaders: tc.forward})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := call(t, be, forwardRequest()); err != nil {
				t.Fatal(err)
			}
			diffHeaders(t, lowerKeys(<-got), wantForwarded(tc.want))
		})
	}
}

// On NATS, the task's keys are passed as written: W3C keys stay lower
// case for other NATS clients, and a key differing only in case is not
// merged with another.
func TestNATSForwardKeepsKeyCase(t *testing.T) {
	_, nc := startNATS(t)
	got := make(chan nats.Header, 1)
	sub, err := nc.Subscribe("svc.case", func(m *nats.Msg) {
		got <- m.Header
		_ = m.Respond(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	be, err := handlers.NewNATS(handlers.NATSOptions{Conn: nc, Subject: "svc.case", ForwardHeaders: []string{"X-Model"}})
	if err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{"traceparent": {"00-a-b-01"}, "x-model": {"small"}, "X-MODEL": {"large"}}
	if _, err := call(t, be, &handlers.Request{TaskID: "t", Header: hdr}); err != nil {
		t.Fatal(err)
	}
	h := <-got
	for _, k := range []string{"traceparent", "x-model", "X-MODEL"} {
		if !slices.Equal(h[k], hdr[k]) {
			t.Errorf("service received %s = %q, want %q (key as the task wrote it)", k, h[k], hdr[k])
		}
	}
}

func TestCheckForwardHeader(t *testing.T) {
	tests := []struct {
		give   string
		wantOK bool
	}{
		{"X-Request-Id", true},
		{"x-request-*", true},
		{"*", true},
		{"X-*-Id", true},
		{"*Authorization*", true}, // matches more than credentials; they stay out anyway
		{"Cookie", true},
		{"Task-Id", true}, // sent anyway, from the request
		{"Nats*", true},   // not only Nats- headers
		{"", false},
		{"X Request", false},
		{"X-Request:", false},
		{"Ü-Header", false},
		{"Authorization", false},
		{"proxy-authorization", false},
		{"Nats-Msg-Id", false},
		{"nats-*", false},
		{"Content-Length", false},
		{"Host", false},
		{strings.Repeat("x", 257), false},
	}
	for _, tc := range tests {
		err := handlers.CheckForwardHeader(tc.give)
		switch {
		case tc.wantOK && err != nil:
			t.Errorf("CheckForwardHeader(%.20q): got %v, want nil", tc.give, err)
		case !tc.wantOK && !errors.Is(err, handlers.ErrInvalidHeaderPattern):
			t.Errorf("CheckForwardHeader(%.20q): got %v, want ErrInvalidHeaderPattern", tc.give, err)
		}
	}
}

func TestNewBackendBadForwardHeaders(t *testing.T) {
	_, nc := startNATS(t)
	for _, give := range [][]string{{"Authorization"}, {"X-Ok", ""}, {"Nats-*"}} {
		_, herr := handlers.NewHTTP(handlers.HTTPOptions{URL: "http://127.0.0.1:1/run", ForwardHeaders: give})
		_, nerr := handlers.NewNATS(handlers.NATSOptions{Conn: nc, Subject: "svc.x", ForwardHeaders: give})
		for _, err := range []error{herr, nerr} {
			if !errors.Is(err, handlers.ErrInvalidOption) || !errors.Is(err, handlers.ErrInvalidHeaderPattern) {
				t.Errorf("forward_headers %q: got %v, want ErrInvalidOption and ErrInvalidHeaderPattern", give, err)
			}
		}
	}
}

func TestMatchHeader(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"X-Request-Id", "X-Request-Id", true},
		{"X-Request-Id", "x-request-id", true},
		{"x-request-id", "X-REQUEST-ID", true},
		{"X-Request-Id", "X-Request-Ids", false},
		{"X-Request-Id", "X-Request-I", false},
		{"X-Request-*", "X-Request-Id", true},
		{"X-Request-*", "X-Request-", true},
		{"X-Request-*", "X-Requested-With", false},
		{"*", "", true},
		{"*", "Anything", true},
		{"", "", true},
		{"", "X", false},
		{"*-Id", "X-Request-Id", true},
		{"*-Id", "X-Request-Idx", false},
		{"X-*-Id", "X-A-B-Id", true},
		{"X-*-Id", "X--Id", true},
		{"X-*-Id", "X-Id", false},
		{"a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"**", "x", true},
		{"x*", "", false},
	}
	for _, tc := range tests {
		if got := handlers.MatchHeader(tc.pattern, tc.name); got != tc.want {
			t.Errorf("MatchHeader(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// FuzzMatchHeader checks MatchHeader against a regular expression built
// from the pattern, and its plain properties on any input.
func FuzzMatchHeader(f *testing.F) {
	for _, s := range [][2]string{
		{"X-Request-*", "x-request-id"}, {"*", ""}, {"a*b*c", "aXbYc"}, {"*-Id", "X-Id-Id"},
		{"K*", "\u212a"}, {"x*", "X\xff"}, {"**a", "ba"}, {"", ""}, {"*ab*ab*", "abab"}, {"a*ba*b", "abab"}, {"*a*", "A"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := handlers.MatchHeader(pattern, name)
		if !strings.Contains(pattern, "*") && got != strings.EqualFold(pattern, name) && isASCII(pattern) && isASCII(name) {
			t.Fatalf("MatchHeader(%q, %q) = %v, want case-insensitive equality", pattern, name, got)
		}
		if !handlers.MatchHeader(strings.ReplaceAll(pattern, "*", ""), strings.ReplaceAll(pattern, "*", "")) {
			t.Fatalf("pattern %q without its stars does not match itself", pattern)
		}
		if len(pattern) > 64 || len(name) > 256 || !utf8.ValidString(pattern) || !utf8.ValidString(name) {
			return // the reference below is for what regexp compiles quickly and reads as we do
		}
		parts := strings.Split(asciiLower(pattern), "*")
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		re := regexp.MustCompile(`^(?s)` + strings.Join(parts, ".*") + `$`)
		if want := re.MatchString(asciiLower(name)); got != want {
			t.Fatalf("MatchHeader(%q, %q) = %v, want %v (as %s)", pattern, name, got, want, re)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// asciiLower lowers A-Z only, as header names are ASCII and
// strings.ToLower would fold other letters too.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}
