package redact

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// defaultDenied are the headers that carry credentials in every protocol
// Breakwater speaks; lower case.
var defaultDenied = [...]string{
	"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
}

// DefaultHeaders returns the headers every deny-list holds, whatever the
// configuration adds: Authorization, Proxy-Authorization, Cookie,
// Set-Cookie, X-Api-Key and X-Auth-Token.
func DefaultHeaders() []string {
	return []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key", "X-Auth-Token"}
}

// ErrInvalidPattern means a header name or pattern given to NewHeaders
// cannot name a header: empty, or with a byte NATS refuses in a header name
// (a control character, a space, ':' or anything outside printable ASCII).
var ErrInvalidPattern = errors.New("invalid header name pattern")

// Headers is a header deny-list: the default names plus names and '*'
// patterns from the configuration (`dlq.redact_headers`), matched without
// regard to ASCII case. A nil *Headers is the default list alone. Headers is
// immutable once made and safe for concurrent use.
type Headers struct {
	exact    map[string]struct{} // extra names, lower case
	patterns []string            // extra patterns, lower case, each with a '*'
}

// NewHeaders returns the deny-list of the default names plus extra. An
// extra entry is a header name ("X-Session") or a pattern in which '*'
// stands for any run of characters, none included ("X-Secret-*",
// "*-Token"). An entry that cannot name a header is an error wrapping
// ErrInvalidPattern.
func NewHeaders(extra ...string) (*Headers, error) {
	h := &Headers{exact: make(map[string]struct{}, len(extra))}
	for _, p := range extra {
		if err := ValidPattern(p); err != nil {
			return nil, err
		}
		lp := lowerASCII(p)
		if strings.Contains(lp, "*") {
			h.patterns = append(h.patterns, lp)
		} else {
			h.exact[lp] = struct{}{}
		}
	}
	return h, nil
}

// ValidPattern reports, as an error wrapping ErrInvalidPattern, why p
// cannot be a header name or pattern; nil when it can.
func ValidPattern(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPattern)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c > '~' || c == ':' {
			return fmt.Errorf("%w: %q: byte %d (%q) cannot be in a header name", ErrInvalidPattern, p, i, c)
		}
	}
	return nil
}

// Denied reports whether the header name is on the list.
func (h *Headers) Denied(name string) bool {
	if defaultDeniedName(name) {
		return true
	}
	if h == nil {
		return false
	}
	if len(h.exact) > 0 {
		if _, ok := h.exact[lowerASCII(name)]; ok {
			return true
		}
	}
	for _, p := range h.patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}

func defaultDeniedName(name string) bool {
	for _, n := range defaultDenied {
		if equalFoldASCII(n, name) {
			return true
		}
	}
	return false
}

// equalFoldASCII is strings.EqualFold with ASCII folding only, so that no
// Unicode look-alike ("ſ" for "s") counts as a listed name.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// Copy returns a copy of src without the denied headers; the values are
// copied too, so changing one side leaves the other alone. It never returns
// nil, so the caller can Set on the result.
func (h *Headers) Copy(src nats.Header) nats.Header {
	out := make(nats.Header, len(src))
	for k, v := range src {
		if h.Denied(k) {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// Text is the package's Text with every name of this list (not only the
// defaults) recognised in "Name: value" pairs.
func (h *Headers) Text(s string) string {
	return pairs(textPatterns(s), h.Denied)
}

// Match reports whether name matches pattern, ignoring ASCII case; '*' in
// pattern stands for any run of bytes, none included, and every other byte
// stands for itself. Only ASCII letters fold: "K" (U+212A KELVIN SIGN) is not
// "k", as no HTTP or NATS peer would take it for one.
func Match(pattern, name string) bool {
	// Iterative glob with backtracking to the last star: O(len(pattern) *
	// len(name)) at worst, no recursion, no allocation.
	px, nx := 0, 0
	starP, starN := -1, 0
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			c := pattern[px]
			if c == '*' {
				starP, starN = px, nx
				px++
				continue
			}
			if nx < len(name) && lower(name[nx]) == lower(c) {
				px++
				nx++
				continue
			}
		}
		if starP >= 0 && starN < len(name) {
			starN++
			px, nx = starP+1, starN
			continue
		}
		return false
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lower(b[j])
			}
			return string(b)
		}
	}
	return s
}
