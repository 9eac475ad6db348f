package bus

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// redact hides the password or token of a URL before it reaches a log.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// HostPort returns the host and port that a client URL such as
// "nats://127.0.0.1:4222" or "localhost:4333" points at; the embedded server
// listens there. A missing port is 4222.
func HostPort(raw string) (string, int, error) {
	s := raw
	if first, _, ok := strings.Cut(s, ","); ok {
		s = first
	}
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", 0, fmt.Errorf("%w: url %q: %v", ErrInvalidOption, raw, err)
	}
	host, portStr := u.Hostname(), u.Port()
	if host == "" {
		return "", 0, fmt.Errorf("%w: url %q has no host", ErrInvalidOption, raw)
	}
	if portStr == "" {
		return host, 4222, nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w: url %q: bad port", ErrInvalidOption, raw)
	}
	return host, port, nil
}

// ClientURL is the nats:// URL of host and port.
func ClientURL(host string, port int) string {
	return "nats://" + net.JoinHostPort(host, strconv.Itoa(port))
}
