package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Request headers that every remote backend sets from the Request itself.
const (
	// HeaderTaskID carries Request.TaskID to the service.
	HeaderTaskID = "Task-Id"
	// HeaderTaskType carries Request.Type to the service.
	HeaderTaskType = "Task-Type"
	// HeaderTaskAttempt carries Request.Attempt (decimal) to the service.
	HeaderTaskAttempt = "Task-Attempt"
	// HeaderRetryAfter is read from failed replies (HTTP and NATS alike) as
	// the service's hint before the next try: delta-seconds or an HTTP-date.
	HeaderRetryAfter = "Retry-After"
)

// MaxRetryAfter caps the Retry-After hint a service can give, so a broken or
// hostile service cannot park tasks for days.
const MaxRetryAfter = time.Hour

// Task headers that a backend passes on without being told to: the W3C
// trace context (and baggage), so that a trace continues through the
// service, and Content-Type, which says how to read the payload.
var alwaysForwarded = [...]string{"traceparent", "tracestate", "baggage", "Content-Type"}

// ErrInvalidHeaderPattern is wrapped by CheckForwardHeader for an entry that
// cannot be a forward_headers entry.
var ErrInvalidHeaderPattern = errors.New("invalid header pattern")

// MatchHeader reports whether the header name matches pattern: a header
// name in which each "*" stands for any run of characters, the empty one
// included ("X-Request-*" matches X-Request-Id; "*" matches every name).
// Letters match regardless of case (ASCII only, as header names are
// ASCII tokens).
//
// It does not allocate. A pattern without "*" costs one comparison; the
// text before the first "*" and after the last are compared in place, so
// "X-Request-*" and "*-Id" cost O(len(pattern)) however long name is. Only
// text between two stars is searched for, at O(len(name) × its length).
func MatchHeader(pattern, name string) bool {
	first := strings.IndexByte(pattern, '*')
	if first < 0 {
		return equalFoldASCII(pattern, name)
	}
	last := strings.LastIndexByte(pattern, '*')
	prefix, suffix := pattern[:first], pattern[last+1:]
	if len(name) < len(prefix)+len(suffix) ||
		!equalFoldASCII(name[:len(prefix)], prefix) ||
		!equalFoldASCII(name[len(name)-len(suffix):], suffix) {
		return false
	}
	// Each segment between stars is matched at its leftmost place in what
	// is left: a later place could only leave less room for the next.
	rest := name[len(prefix) : len(name)-len(suffix)]
	for mid := pattern[first:last]; mid != ""; {
		mid = mid[1:] // the "*" before the segment
		seg := mid
		if i := strings.IndexByte(mid, '*'); i >= 0 {
			seg, mid = mid[:i], mid[i:]
		} else {
			mid = ""
		}
		if seg == "" {
			continue
		}
		at := indexFoldASCII(rest, seg)
		if at < 0 {
			return false
		}
		rest = rest[at+len(seg):]
	}
	return true
}

// equalFoldASCII is strings.EqualFold for ASCII letters only: "K" does not
// equal the Kelvin sign here.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

// indexFoldASCII is the first index of sub in s, ASCII letters compared
// regardless of case, or -1.
func indexFoldASCII(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFoldASCII(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// NeverForwarded reports whether a task header is kept from every backend,
// whatever its forward_headers say, even "*": Nats-* headers belong to the
// broker (Nats-Msg-Id, Nats-Expected-*), credentials (Authorization,
// Proxy-Authorization) must never come from a publisher, the Task-Id,
// Task-Type and Task-Attempt a backend sends are the worker's, not the
// task's, and transport headers (Host, Content-Length, Connection, ...)
// are the HTTP client's own.
func NeverForwarded(name string) bool {
	if len(name) >= 5 && strings.EqualFold(name[:5], "Nats-") {
		return true
	}
	switch {
	case strings.EqualFold(name, "Authorization"),
		strings.EqualFold(name, "Proxy-Authorization"),
		strings.EqualFold(name, HeaderTaskID),
		strings.EqualFold(name, HeaderTaskType),
		strings.EqualFold(name, HeaderTaskAttempt):
		return true
	}
	return !transportFree(name)
}

// CheckForwardHeader checks one entry of a backend's forward_headers: a
// header name, or a pattern with "*" (see MatchHeader). An error wraps
// ErrInvalidHeaderPattern and says why: the entry is empty or not a header
// name, or it can only name headers that are never forwarded (see
// NeverForwarded: "Authorization", "Nats-Msg-Id", "Nats-*"), which would
// silently do nothing. Task-Id, Task-Type and Task-Attempt are accepted,
// as backends send them anyway. A pattern that merely includes such
// headers ("*", "*-Authorization") is accepted; they stay out all the same.
func CheckForwardHeader(pattern string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidHeaderPattern, fmt.Sprintf(format, a...))
	}
	switch {
	case pattern == "":
		return bad("empty header name")
	case len(pattern) > maxHeaderPattern:
		return bad("longer than %d bytes", maxHeaderPattern)
	case !validHeaderName(pattern): // "*" is a token character, so patterns pass too
		return bad("not a header name or a pattern of header name characters and *, got %q", pattern)
	}
	literal, _, _ := strings.Cut(pattern, "*")
	switch {
	case len(literal) >= 5 && strings.EqualFold(literal[:5], "Nats-"):
		return bad("%q: Nats-* headers belong to the broker and are never forwarded", pattern)
	case strings.ContainsRune(pattern, '*'):
		return nil
	case strings.EqualFold(pattern, "Authorization"), strings.EqualFold(pattern, "Proxy-Authorization"):
		return bad("%q: credentials are never taken from a task (use the backend's auth or http.headers)", pattern)
	case !transportFree(pattern):
		return bad("%q is a transport header (the HTTP client's own) and never forwarded", pattern)
	}
	return nil
}

// maxHeaderPattern bounds a forward_headers entry; header names are short.
const maxHeaderPattern = 256

// forwarder decides which task headers a backend passes on: the ones in
// alwaysForwarded and those matching its forward_headers, minus
// NeverForwarded. The zero value forwards only alwaysForwarded.
type forwarder struct {
	patterns []string
}

// newForwarder checks patterns with CheckForwardHeader.
func newForwarder(patterns []string) (forwarder, error) {
	for _, p := range patterns {
		if err := CheckForwardHeader(p); err != nil {
			return forwarder{}, err
		}
	}
	return forwarder{patterns: slices.Clone(patterns)}, nil
}

// maxForwardedName bounds the task header names a backend passes on. No
// service takes a longer one, and the bound keeps a task with huge header
// names from making matching slow.
const maxForwardedName = 1024

// allowed reports whether the task header name reaches the backend.
func (f forwarder) allowed(name string) bool {
	// Only real header names (RFC 9110 tokens, so ASCII) pass: what a NATS
	// header may hold beyond that, no HTTP service could be sent anyway.
	if len(name) > maxForwardedName || !validHeaderName(name) || NeverForwarded(name) {
		return false
	}
	for _, a := range alwaysForwarded {
		if equalFoldASCII(name, a) {
			return true
		}
	}
	for _, p := range f.patterns {
		if MatchHeader(p, name) {
			return true
		}
	}
	return false
}

// parseRetryAfter parses a Retry-After value: delta-seconds or an HTTP-date
// (relative to now). Garbage, negative values and dates in the past give 0;
// the result is capped at MaxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return MaxRetryAfter
			}
			return 0
		}
		if n >= uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, MaxRetryAfter)
}

// cleanText makes remote text (an error body, a service description) safe to
// put in an error message: valid UTF-8, no control characters, at most n
// bytes, trimmed.
func cleanText(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}
