package dlq

import "github.com/breakwater/breakwater/redact"

// Redact removes credentials from an error text: it is redact.Text (URL
// userinfo, bearer/basic tokens, secret query parameters, values of the
// default denied headers). Kept for existing callers; new code calls
// redact.Text, or Writer.Redact to include the configured headers.
func Redact(s string) string { return redact.Text(s) }
