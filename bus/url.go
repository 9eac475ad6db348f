package bus

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Schemes a client URL may use: those nats.go dials. A bare host:port is a
// nats:// URL.
var validSchemes = []string{"nats", "tls", "ws", "wss"}

// ParseServers checks a --nats-url value: one server URL or several,
// comma-separated, each nats://, tls://, ws:// or wss:// (a bare host:port
// means nats://), with a host and a port in 1..65535 when one is given. It
// returns the URLs with the scheme made explicit, in the order given.
//
// Errors wrap ErrInvalidOption and name the offending server without its
// user info, so a password in the URL never reaches a log or a terminal.
func ParseServers(raw string) ([]string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("%w: empty server URL", ErrInvalidOption)
	}
	parts := strings.Split(raw, ",")
	out := make([]string, 0, len(parts))
	ws := false
	for i, p := range parts {
		s := strings.TrimSpace(p)
		shown := RedactURL(s)
		if len(parts) > 1 {
			shown = fmt.Sprintf("%s (server %d of %d)", shown, i+1, len(parts))
		}
		if s == "" {
			return nil, fmt.Errorf("%w: server URL list %q has an empty entry", ErrInvalidOption, RedactURL(raw))
		}
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil {
			// url.Error quotes the whole URL, user info included: say
			// what is wrong without it.
			return nil, fmt.Errorf("%w: server URL %q is not a URL", ErrInvalidOption, shown)
		}
		scheme := strings.ToLower(u.Scheme)
		if !isValidScheme(scheme) {
			return nil, fmt.Errorf("%w: server URL %q: scheme %q is not one of %s (a bare host:port means nats://)",
				ErrInvalidOption, shown, u.Scheme, strings.Join(validSchemes, ", "))
		}
		if u.Hostname() == "" {
			return nil, fmt.Errorf("%w: server URL %q has no host", ErrInvalidOption, shown)
		}
		if ps := u.Port(); ps != "" {
			if port, err := strconv.Atoi(ps); err != nil || port < 1 || port > 65535 {
				return nil, fmt.Errorf("%w: server URL %q: port %q is not in 1..65535", ErrInvalidOption, shown, ps)
			}
		}
		isWS := scheme == "ws" || scheme == "wss"
		if i > 0 && isWS != ws {
			// nats.go refuses the mix too, but without saying which.
			return nil, fmt.Errorf("%w: server URL %q: websocket (ws, wss) and nats/tls servers cannot be mixed in one list",
				ErrInvalidOption, shown)
		}
		ws = isWS
		out = append(out, s)
	}
	return out, nil
}

func isValidScheme(s string) bool {
	for _, v := range validSchemes {
		if s == v {
			return true
		}
	}
	return false
}

// RedactURL removes the user info (user, password or token) from a server
// URL or a comma-separated list of them, for logs and errors. It works on
// the text, so it also cleans URLs that do not parse.
func RedactURL(raw string) string {
	if !strings.Contains(raw, "@") {
		return raw
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = stripUserInfo(p)
	}
	return strings.Join(parts, ",")
}

// stripUserInfo drops everything between the scheme (if any) and the last
// '@' of the authority, which is where url.Parse finds the user info too.
func stripUserInfo(s string) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + 3
	}
	end := len(s)
	if i := strings.IndexAny(s[start:], "/?#"); i >= 0 {
		end = start + i
	}
	at := strings.LastIndex(s[start:end], "@")
	if at < 0 {
		return s
	}
	return s[:start] + s[start+at+1:]
}

// HostPort returns the host and port that the first server of a client URL
// list such as "nats://127.0.0.1:4222" or "localhost:4333" points at; the
// embedded server listens there. A missing port is 4222. Only nats:// (or
// a bare host:port) can be listened at: the embedded server has no TLS or
// websocket listener.
func HostPort(raw string) (string, int, error) {
	servers, err := ParseServers(raw)
	if err != nil {
		return "", 0, err
	}
	u, err := url.Parse(servers[0])
	if err != nil { // ParseServers parsed it already
		return "", 0, fmt.Errorf("%w: server URL %q is not a URL", ErrInvalidOption, RedactURL(servers[0]))
	}
	if u.Scheme != "nats" {
		return "", 0, fmt.Errorf("%w: server URL %q: the embedded server listens for nats:// clients only",
			ErrInvalidOption, RedactURL(servers[0]))
	}
	host, portStr := u.Hostname(), u.Port()
	if portStr == "" {
		return host, 4222, nil
	}
	port, _ := strconv.Atoi(portStr) // checked by ParseServers
	return host, port, nil
}

// ClientURL is the nats:// URL of host and port.
func ClientURL(host string, port int) string {
	return "nats://" + net.JoinHostPort(host, strconv.Itoa(port))
}
