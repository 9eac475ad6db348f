package dlq

import "regexp"

// Patterns of secrets that may appear in error texts: credentials in URLs,
// bearer tokens and token-like query parameters. Compiled once; read-only.
var (
	urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)
	bearer      = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+`)
	queryToken  = regexp.MustCompile(`(?i)([?&](?:access_token|token|api_key|apikey|key|secret|password|sig|signature)=)[^&\s"']+`)
)

// Redact removes credentials from an error text before it is stored or
// sent anywhere: URL userinfo, bearer/basic tokens and secret-looking query
// parameters are replaced with "REDACTED".
func Redact(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}REDACTED@")
	s = bearer.ReplaceAllString(s, "${1} REDACTED")
	s = queryToken.ReplaceAllString(s, "${1}REDACTED")
	return s
}
