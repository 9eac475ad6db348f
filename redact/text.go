package redact

import (
	"regexp"
	"strings"
)

// Replacement stands where a secret was.
const Replacement = "REDACTED"

// Patterns of secrets that may appear in error texts: credentials in URLs,
// bearer/basic tokens and token-like query parameters. Compiled once and
// only read afterwards, so they are safe to share.
var (
	urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)
	authScheme  = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+`)
	queryToken  = regexp.MustCompile(`(?i)([?&](?:access_token|refresh_token|token|api_key|apikey|key|client_secret|secret|password|sig|signature)=)[^&\s"']+`)
)

// Text removes credentials from a text (usually an error) before it is
// stored, logged or sent anywhere: URL userinfo, bearer and basic tokens,
// secret-looking query parameters, and the value of any header of the
// default deny-list written out as "Name: value", "Name=value" or
// "\"Name\":\"value\"" (a backend that echoes its request in an error body).
// Each secret becomes Replacement. Text is idempotent.
func Text(s string) string { return (*Headers)(nil).Text(s) }

func textPatterns(s string) string {
	if strings.Contains(s, "://") && strings.Contains(s, "@") {
		s = urlUserinfo.ReplaceAllString(s, "${1}"+Replacement+"@")
	}
	// The regexps cost microseconds each: run them only where they can match.
	if containsFold(s, "bearer") || containsFold(s, "basic") {
		s = authScheme.ReplaceAllString(s, "${1} "+Replacement)
	}
	if strings.ContainsAny(s, "?&") {
		s = queryToken.ReplaceAllString(s, "${1}"+Replacement)
	}
	return s
}

// pairs replaces the values of denied headers written as name/value pairs
// in s. A value runs to the end of its line or its closing quote (or ']'
// after '['), or, when
// unquoted, to the first of `"',}]&`: more is hidden rather than less (a
// cookie's "a=1; b=2" has spaces and separators inside).
func pairs(s string, denied func(string) bool) string {
	var b strings.Builder
	last, i := 0, 0
	for i < len(s) {
		j := strings.IndexAny(s[i:], ":=")
		if j < 0 {
			break
		}
		sep := i + j
		i = sep + 1
		k := sep
		for k > 0 && s[k-1] == ' ' {
			k--
		}
		if k > 0 && (s[k-1] == '"' || s[k-1] == '\'') {
			k--
		}
		end := k
		for k > 0 && isNameByte(s[k-1]) {
			k--
		}
		if k == end || !denied(s[k:end]) {
			continue
		}
		v := sep + 1
		for v < len(s) && s[v] == ' ' {
			v++
		}
		var quote byte
		if v < len(s) {
			switch s[v] {
			case '"', '\'':
				quote = s[v]
				v++
			case '[': // Go's fmt of a header map: Name:[value]
				quote = ']'
				v++
			}
		}
		e := v
		for e < len(s) && !valueEnd(s[e], quote) {
			e++
		}
		if e == v || s[v:e] == Replacement {
			continue
		}
		if b.Len() == 0 {
			b.Grow(len(s))
		}
		b.WriteString(s[last:v])
		b.WriteString(Replacement)
		last, i = e, e
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// containsFold reports whether s contains sub (lower-case ASCII) in any
// ASCII case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFoldASCII(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// isNameByte reports whether c may be part of a header name as people and
// programs write them (letters, digits, '-' and '_').
func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func valueEnd(c, quote byte) bool {
	if c == '\r' || c == '\n' {
		return true
	}
	if quote != 0 {
		return c == quote
	}
	switch c {
	case '"', '\'', ',', '}', ']', '&':
		return true
	}
	return false
}
