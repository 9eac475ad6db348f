package handlers

import (
	"net/http"
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

// forwardable reports whether a task header may be passed to a backend
// service. Nats-* headers belong to the broker (Nats-Msg-Id, Nats-Expected-*),
// credentials must never come from a publisher, and the Task-* headers the
// backend sets itself are not taken from the task.
func forwardable(key string) bool {
	if len(key) >= 5 && strings.EqualFold(key[:5], "Nats-") {
		return false
	}
	switch {
	case strings.EqualFold(key, "Authorization"),
		strings.EqualFold(key, "Proxy-Authorization"),
		strings.EqualFold(key, HeaderTaskID),
		strings.EqualFold(key, HeaderTaskType),
		strings.EqualFold(key, HeaderTaskAttempt):
		return false
	}
	return true
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
