package redact_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/redact"
)

func TestText(t *testing.T) {
	tests := []struct{ give, want string }{
		{"dial http://bob:hunter2@api.local/run: refused", "dial http://REDACTED@api.local/run: refused"},
		{"sent Bearer abc.def-123 rejected", "sent Bearer REDACTED rejected"},
		{"GET https://x/y?api_key=zzz&q=1 failed", "GET https://x/y?api_key=REDACTED&q=1 failed"},
		{"status 503: overloaded", "status 503: overloaded"},
		{"POST https://h/run?token=t0k&x=1: 401", "POST https://h/run?token=REDACTED&x=1: 401"},
		{"GET http://h/?access_token=a.b.c EOF", "GET http://h/?access_token=REDACTED EOF"},
		{"grant_type=client_credentials&client_secret=s3cr3t&scope=x", "grant_type=client_credentials&client_secret=REDACTED&scope=x"},
		{"nats://user:pw@nats:4222 refused", "nats://REDACTED@nats:4222 refused"},
		{"got bearer eyJhbGciOi.x_y-z in reply", "got bearer REDACTED in reply"},
		{"no tokens here: tokenizer failed", "no tokens here: tokenizer failed"},
		// Header pairs of the default deny-list, as backends echo them.
		{"Authorization: Bearer abc.def-123", "Authorization: REDACTED"},
		{"400: Cookie: a=1; b=2\nnext line", "400: Cookie: REDACTED\nnext line"},
		{`{"error":"bad key","x-api-key":"k-123","id":7}`, `{"error":"bad key","x-api-key":"REDACTED","id":7}`},
		{"x-auth-token=s3cr3t&user=bob", "x-auth-token=REDACTED&user=bob"},
		{"map[Set-Cookie:[sid=42] Accept:[*/*]]", "map[Set-Cookie:[REDACTED] Accept:[*/*]]"},
		{"proxy-authorization : 'Basic Zm9v' denied", "proxy-authorization : 'REDACTED' denied"},
		// Not a header of the list, or not a pair.
		{"MyCookie: crumbs", "MyCookie: crumbs"},
		{"cookie jar empty", "cookie jar empty"},
		{"Cookie:", "Cookie:"},
		{"X-Api-Key: REDACTED", "X-Api-Key: REDACTED"},
	}
	for _, tt := range tests {
		got := redact.Text(tt.give)
		if got != tt.want {
			t.Errorf("Text(%q) = %q, want %q", tt.give, got, tt.want)
		}
		if again := redact.Text(got); again != got {
			t.Errorf("Text is not idempotent on %q: %q", got, again)
		}
	}
}

func TestHeadersText(t *testing.T) {
	h, err := redact.NewHeaders("X-Session", "X-Secret-*")
	if err != nil {
		t.Fatal(err)
	}
	give := "rejected: X-Session: abc, X-Secret-Id=42&Cookie=c1, X-Other: visible"
	want := "rejected: X-Session: REDACTED, X-Secret-Id=REDACTED&Cookie=REDACTED, X-Other: visible"
	if got := h.Text(give); got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	if got := redact.Text(give); !strings.Contains(got, "X-Session: abc") {
		t.Errorf("package Text hid a name that only the configured list has: %q", got)
	}
}

func TestDenied(t *testing.T) {
	h, err := redact.NewHeaders("X-Session", "X-Secret-*", "*-token", "X-*-Key-*")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		give string
		want bool
	}{
		{"Authorization", true}, {"authorization", true}, {"PROXY-AUTHORIZATION", true},
		{"Cookie", true}, {"set-cookie", true}, {"X-Api-Key", true}, {"x-auth-token", true},
		{"X-Session", true}, {"x-session", true}, {"X-Secret-", true}, {"x-secret-anything", true},
		{"Refresh-Token", true}, {"-TOKEN", true}, {"X-a-Key-b", true}, {"X-a-Key-", true},
		{"X-Sessions", false}, {"X-Secret", false}, {"Token", false}, {"X-Key-b", false},
		{"Content-Type", false}, {"Nats-Msg-Id", false}, {"", false},
		{"Cookie ", false}, {"Co\u017fkie", false}, {"\u212Aey", false},
	}
	for _, tt := range tests {
		if got := h.Denied(tt.give); got != tt.want {
			t.Errorf("Denied(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
	// The nil list is the default list.
	var none *redact.Headers
	for _, n := range redact.DefaultHeaders() {
		if !none.Denied(n) || !none.Denied(strings.ToLower(n)) {
			t.Errorf("nil list does not deny %s", n)
		}
	}
	if none.Denied("X-Session") {
		t.Error("nil list denies a configured name")
	}
}

func TestNewHeadersInvalid(t *testing.T) {
	for _, p := range []string{"", "X Api", "X-Api:", "X-\u00e9", "X-\x00", "\t"} {
		if _, err := redact.NewHeaders("Ok", p); !errors.Is(err, redact.ErrInvalidPattern) {
			t.Errorf("NewHeaders(%q): got %v, want ErrInvalidPattern", p, err)
		}
	}
}

func TestCopy(t *testing.T) {
	h, err := redact.NewHeaders("X-Internal-*")
	if err != nil {
		t.Fatal(err)
	}
	src := nats.Header{
		"Authorization": {"Bearer x"}, "cookie": {"a=1"}, "X-API-KEY": {"k"}, "X-Internal-User": {"bob"},
		"Content-Type": {"application/json"}, "Task-Id": {"t1"}, "X-Multi": {"a", "b"},
	}
	got := h.Copy(src)
	want := nats.Header{"Content-Type": {"application/json"}, "Task-Id": {"t1"}, "X-Multi": {"a", "b"}}
	if len(got) != len(want) {
		t.Fatalf("Copy = %v, want %v", got, want)
	}
	for k, v := range want {
		if g := got[k]; len(g) != len(v) || strings.Join(g, ",") != strings.Join(v, ",") {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	got["X-Multi"][0] = "changed"
	if src["X-Multi"][0] != "a" {
		t.Error("Copy shares value slices with its source")
	}
	if (*redact.Headers)(nil).Copy(nil) == nil {
		t.Error("Copy(nil) returned nil")
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true}, {"*", "anything", true}, {"", "", true}, {"", "a", false},
		{"a*", "A", true}, {"a*b", "ab", true}, {"a*b", "axxb", true}, {"a*b", "axxbc", false},
		{"*a*a*", "aa", true}, {"*a*a*", "a", false}, {"**", "x", true}, {"a**b", "ab", true},
		{"x-*-*", "X--", true}, {"x-*-*", "X-", false}, {"abc", "ABC", true}, {"abc", "abcd", false},
	}
	for _, tt := range tests {
		if got := redact.Match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

// FuzzMatch checks the glob matcher against the regexp package: the pattern
// as literal pieces joined by ".*", anchored, on ASCII-lowered input.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"X-Secret-*", "x-secret-id"}, {"*-token", "Refresh-Token"}, {"a*b*c", "aXbYc"}, {"*a*a*a*", "aaaa"},
		{"**", ""}, {"Cookie", "cookie"}, {"x*", "\xff\xfe"}, {"*", "\u212Aey"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := redact.Match(pattern, name)
		if !utf8.ValidString(pattern) {
			return // regexp needs a valid pattern; Match itself must not panic
		}
		pieces := strings.Split(lowerASCII(pattern), "*")
		for i, p := range pieces {
			pieces[i] = regexp.QuoteMeta(p)
		}
		re := regexp.MustCompile(`^(?s)` + strings.Join(pieces, ".*") + `$`)
		// Invalid UTF-8 in name: regexp reads each bad byte as one rune, which
		// ".*" matches and a (valid) literal never does: byte matching agrees.
		if want := re.MatchString(lowerASCII(name)); got != want {
			t.Fatalf("Match(%q, %q) = %v, regexp says %v", pattern, name, got, want)
		}
		if upper := redact.Match(pattern, upperASCII(name)); upper != got {
			t.Fatalf("Match(%q, %q) depends on case", pattern, name)
		}
		if redact.ValidPattern(pattern) == nil {
			h, err := redact.NewHeaders(pattern)
			if err != nil {
				t.Fatal(err)
			}
			if h.Denied(name) != (got || (*redact.Headers)(nil).Denied(name)) {
				t.Fatalf("Denied(%q) with %q disagrees with Match", name, pattern)
			}
		}
	})
}

// FuzzText checks that Text never breaks UTF-8, is idempotent, and that a
// secret written as the value of a denied header never survives.
func FuzzText(f *testing.F) {
	f.Add("upstream said: ", "Cookie", ": ", "s3cr3tValue", " and more")
	f.Add(`{"a":1,"`, "X-Api-Key", `":"`, "k3yk3yk3y", `"}`)
	f.Add("GET /?x=1&", "x-auth-token", "=", "abcdefgh12", "&y=2")
	f.Fuzz(func(t *testing.T, before, name, sep, secret, after string) {
		in := before + name + sep + secret + after
		out := redact.Text(in)
		if utf8.ValidString(in) && !utf8.ValidString(out) {
			t.Fatalf("Text(%q) = %q: invalid UTF-8", in, out)
		}
		if again := redact.Text(out); again != out {
			t.Fatalf("not idempotent: %q, then %q", out, again)
		}
		// The case the deny-list promises: a listed name, a plain separator,
		// a token-like secret that appears nowhere else.
		if !(*redact.Headers)(nil).Denied(name) || (sep != ": " && sep != "=" && sep != ":") || len(secret) < 8 ||
			!isToken(secret) || strings.Contains(before, secret) || strings.Contains(after, secret) ||
			strings.Contains(redact.Replacement, secret) || (before != "" && isNameByteStr(before[len(before)-1:])) {
			return
		}
		if strings.Contains(out, secret) {
			t.Fatalf("Text(%q) = %q keeps the secret", in, out)
		}
	})
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isNameByteStr(s string) bool { return isToken(s) || s == "-" || s == "_" }

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}

func BenchmarkCopy(b *testing.B) {
	h, err := redact.NewHeaders("X-Session", "X-Secret-*")
	if err != nil {
		b.Fatal(err)
	}
	src := nats.Header{"Task-Id": {"t1"}, "Content-Type": {"application/json"}, "traceparent": {"00-x-y-01"},
		"Authorization": {"Bearer x"}, "X-Secret-Id": {"s"}, "Nats-Msg-Id": {"m"}}
	b.ReportAllocs()
	for b.Loop() {
		_ = h.Copy(src)
	}
}

func BenchmarkText(b *testing.B) {
	s := "POST https://api.local/run: status 503: upstream overloaded (retry in 2s), request id 7f3a"
	b.ReportAllocs()
	for b.Loop() {
		_ = redact.Text(s)
	}
}
