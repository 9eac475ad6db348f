package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// Defaults of the HTTP backend.
const (
	// HTTPMaxIdleConnsPerHost is the idle keep-alive pool of the default
	// transport: enough for a worker running 64+ concurrent calls to one
	// endpoint without opening a connection per call.
	HTTPMaxIdleConnsPerHost = 256
	// HTTPMaxResponseBody bounds a successful response body; a larger one is
	// a permanent failure, so a runaway service cannot exhaust memory.
	HTTPMaxResponseBody = 64 << 20
	// httpErrorExcerpt is how much of a failed response's body goes into
	// the error message.
	httpErrorExcerpt = 512
	// httpDrainLimit is how much of an unread body is discarded so the
	// connection can be reused; beyond it the connection is dropped.
	httpDrainLimit = 256 << 10
)

// responseHeaders are the response headers copied into Response.Header.
// Hop-by-hop and transport headers (Date, Content-Length, Connection, ...)
// are of no use to a task's result.
var responseHeaders = [...]string{"Content-Type", "Content-Language", "Cache-Control", "Etag", "Last-Modified"}

// HTTPOptions configures an HTTP backend. Only URL is required.
type HTTPOptions struct {
	// Name identifies the backend in errors (Error.Backend).
	Name string
	// URL is the http or https endpoint every call POSTs the payload to.
	// Userinfo, if any, is used by net/http as basic auth and is redacted
	// (with the query) in every error.
	URL string
	// Headers are static request headers set on every call. They take
	// precedence over task headers (the operator's config wins over a
	// publisher); "Host" overrides the request's Host. They may not set
	// Authorization when a bearer token is configured, nor transport
	// headers such as Content-Length.
	Headers map[string]string
	// BearerTokenFile is a file holding the token sent as
	// "Authorization: Bearer <token>". It is read at NewHTTP (a missing or
	// empty file is an error) and again whenever its modification time or
	// size changes, so a rotated token is used without a restart. While the
	// file cannot be read, or is empty, the last good token is used.
	BearerTokenFile string
	// BearerTokenEnv names an environment variable holding the token, read
	// once at NewHTTP. At most one of BearerTokenFile and BearerTokenEnv may
	// be set.
	BearerTokenEnv string
	// OAuth2, when set, authenticates every call with a token of the
	// OAuth2 client credentials grant (see OAuth2Options). It excludes
	// BearerTokenFile and BearerTokenEnv. The token endpoint is called
	// with Client too.
	OAuth2 *OAuth2Options
	// Client, when set, is used instead of the default keep-alive client
	// (HTTPMaxIdleConnsPerHost idle connections, no overall timeout: the
	// context of a call carries the attempt's deadline). If its
	// CheckRedirect is nil, redirects are not followed (a 3xx is a
	// permanent failure) since net/http would turn the POST into a GET.
	Client *http.Client
	// Getenv looks up BearerTokenEnv and OAuth2.ClientSecretEnv; default
	// os.Getenv. For tests.
	Getenv func(string) string
	// Propagator, when set, writes the call context's trace (the attempt's
	// span) into the request headers, replacing the task's traceparent.
	Propagator propagation.TextMapPropagator
	// ForwardHeaders names the task headers passed on to the service
	// besides the trace context and Content-Type: header names or "*"
	// patterns ("X-Request-*"), matched regardless of case. Default none.
	// Each entry must pass CheckForwardHeader; the headers NeverForwarded
	// lists stay out even when a pattern matches them.
	ForwardHeaders []string
}

// HTTP is a Backend that POSTs the task payload to a URL. It is safe for
// concurrent use. Close releases its idle connections.
//
// The request carries Content-Type (the task's, else
// application/octet-stream), Task-Id, Task-Type and Task-Attempt (from the
// Request, never from the task's headers), the task's trace context
// (traceparent, tracestate, baggage; replaced by the call's own when a
// Propagator is set), the task headers matching ForwardHeaders, the
// configured Headers and the bearer token (static or OAuth2). No other task header reaches
// the service: a publisher cannot hand it a Cookie, an X-Api-Key or an
// identity header it would trust.
//
// Failures are *Error values: 408, 429 and 5xx (but 501) are transient
// with Status and the Retry-After hint; 501, 3xx and other 4xx are
// permanent with Status and the start of the response body; network
// errors, a deadline or a cancelled context are transient. With OAuth2, a
// 401 is retried once with a new token, and the token endpoint's failures
// are classified as OAuth2Options says. Error messages never contain a
// token, the client secret or the URL's userinfo.
type HTTP struct {
	name    string
	url     string
	safeURL string
	host    string
	static  http.Header
	client  *http.Client
	token   *tokenSource
	oauth   *oauthSource
	prop    propagation.TextMapPropagator
	fwd     forwarder
}

var _ Backend = (*HTTP)(nil)

// NewHTTP returns an HTTP backend. It reads the bearer token (if any) but
// does not connect. Errors wrap ErrInvalidOption.
func NewHTTP(o HTTPOptions) (*HTTP, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("http backend %q: %w: %s", o.Name, ErrInvalidOption, fmt.Sprintf(format, a...))
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		// The parse error quotes the URL: do not repeat it, it may hold a secret.
		return nil, bad("url is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, bad("url %s: scheme must be http or https", redactURL(u))
	}
	if u.Host == "" {
		return nil, bad("url %s: no host", redactURL(u))
	}
	h := &HTTP{name: o.Name, url: o.URL, safeURL: redactURL(u), static: make(http.Header, len(o.Headers)), prop: o.Propagator}
	if h.fwd, err = newForwarder(o.ForwardHeaders); err != nil {
		return nil, fmt.Errorf("http backend %q: %w: forward_headers: %w", o.Name, ErrInvalidOption, err)
	}

	switch {
	case o.OAuth2 != nil && (o.BearerTokenFile != "" || o.BearerTokenEnv != ""):
		return nil, bad("oauth2 and a static bearer token are exclusive")
	case o.OAuth2 != nil:
		if h.oauth, err = newOAuthSource(o.Name, o.OAuth2, o.Getenv, bad); err != nil {
			return nil, err
		}
	case o.BearerTokenFile != "" && o.BearerTokenEnv != "":
		return nil, bad("bearer_token_file and bearer_token_env are exclusive")
	case o.BearerTokenFile != "":
		h.token = &tokenSource{path: o.BearerTokenFile}
		if _, err := h.token.get(); err != nil {
			return nil, bad("%v", err)
		}
	case o.BearerTokenEnv != "":
		getenv := o.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		tok := strings.TrimSpace(getenv(o.BearerTokenEnv))
		if tok == "" {
			return nil, bad("environment variable %s is unset or empty", o.BearerTokenEnv)
		}
		if !validHeaderValue(tok) {
			return nil, bad("environment variable %s holds an invalid token", o.BearerTokenEnv)
		}
		h.token = &tokenSource{value: tok}
	}

	for k, v := range o.Headers {
		switch {
		case !validHeaderName(k):
			h.closeOAuth()
			return nil, bad("header name %q is invalid", k)
		case !validHeaderValue(v):
			h.closeOAuth()
			return nil, bad("header %q has an invalid value", k)
		case strings.EqualFold(k, "Host"):
			h.host = v
		case !transportFree(k):
			h.closeOAuth()
			return nil, bad("header %q is set by the transport", k)
		case strings.EqualFold(k, "Authorization") && (h.token != nil || h.oauth != nil):
			h.closeOAuth()
			return nil, bad("header Authorization conflicts with the bearer token")
		default:
			h.static.Set(k, v)
		}
	}

	if o.Client != nil {
		c := *o.Client // shallow copy: same transport and jar
		if c.CheckRedirect == nil {
			c.CheckRedirect = noRedirect
		}
		h.client = &c
	} else {
		h.client = &http.Client{Transport: newHTTPTransport(), CheckRedirect: noRedirect}
	}
	if h.oauth != nil {
		h.oauth.client = h.client
	}
	return h, nil
}

func newHTTPTransport() *http.Transport {
	// The fields of http.DefaultTransport, with a pool sized for a worker.
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          HTTPMaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   HTTPMaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close closes the idle connections of the backend's client and stops an
// OAuth2 token request in flight, waiting for it. Calls made afterwards
// still work (they open new connections) but can no longer get an OAuth2
// token; Close is for shutdown.
func (h *HTTP) Close() error {
	h.closeOAuth()
	h.client.CloseIdleConnections()
	return nil
}

func (h *HTTP) closeOAuth() {
	if h.oauth != nil {
		h.oauth.close()
	}
}

// Call POSTs req.Payload to the URL; see HTTP for headers and error classes.
func (h *HTTP) Call(ctx context.Context, req *Request) (*Response, error) {
	tok, err := h.bearer(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := h.post(ctx, req, tok)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && h.oauth != nil {
		// The token was revoked or expired early: one new token, one more try.
		drainClose(resp.Body)
		h.oauth.invalidate(tok)
		if tok, err = h.bearer(ctx); err != nil {
			return nil, err
		}
		if resp, err = h.post(ctx, req, tok); err != nil {
			return nil, err
		}
	}
	defer drainClose(resp.Body)

	code := resp.StatusCode
	if code >= 200 && code < 300 {
		b, err := readBody(resp.Body, resp.ContentLength, HTTPMaxResponseBody)
		if err != nil {
			if errors.Is(err, errBodyTooLarge) {
				return nil, &Error{Class: ErrPermanent, Backend: h.name, Status: code, Err: err}
			}
			return nil, h.transportError(ctx, err)
		}
		return &Response{Body: b, Header: selectHeaders(resp.Header)}, nil
	}
	return nil, h.statusError(resp, tok)
}

// bearer returns the token to send, "" when none is configured.
func (h *HTTP) bearer(ctx context.Context) (string, error) {
	switch {
	case h.oauth != nil:
		return h.oauth.token(ctx)
	case h.token != nil:
		tok, err := h.token.get()
		if err != nil {
			return "", &Error{Class: ErrTransient, Backend: h.name, Err: err}
		}
		return tok, nil
	}
	return "", nil
}

// post sends one request; the caller closes the response's body.
func (h *HTTP) post(ctx context.Context, req *Request, tok string) (*http.Response, error) {
	var body io.Reader = http.NoBody
	if len(req.Payload) > 0 {
		body = bytes.NewReader(req.Payload)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, body)
	if err != nil {
		return nil, &Error{Class: ErrPermanent, Backend: h.name, Err: fmt.Errorf("build request for %s: invalid request", h.safeURL)}
	}
	h.setHeaders(hreq, req, tok)
	if h.prop != nil {
		h.prop.Inject(ctx, propagation.HeaderCarrier(hreq.Header))
	}
	resp, err := h.client.Do(hreq)
	if err != nil {
		return nil, h.transportError(ctx, err)
	}
	return resp, nil
}

// setHeaders applies the header rules documented on HTTP, lowest precedence
// first: forwarded task headers, static headers, Task-*, Authorization.
func (h *HTTP) setHeaders(hreq *http.Request, req *Request, tok string) {
	hd := hreq.Header
	ct := ""
	for k, vs := range req.Header {
		if strings.EqualFold(k, "Content-Type") {
			if len(vs) > 0 && validHeaderValue(vs[0]) {
				ct = vs[0]
			}
			continue
		}
		if !h.fwd.allowed(k) {
			continue
		}
		for _, v := range vs {
			if validHeaderValue(v) {
				hd.Add(k, v)
			}
		}
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	hd.Set("Content-Type", ct)
	for k, v := range h.static {
		hd[k] = v
	}
	if req.TaskID != "" {
		hd.Set(HeaderTaskID, req.TaskID)
	}
	if req.Type != "" {
		hd.Set(HeaderTaskType, req.Type)
	}
	hd.Set(HeaderTaskAttempt, strconv.Itoa(req.Attempt))
	if tok != "" {
		hd.Set("Authorization", "Bearer "+tok)
	}
	if h.host != "" {
		hreq.Host = h.host
	}
}

// statusError classifies a non-2xx response.
func (h *HTTP) statusError(resp *http.Response, tok string) error {
	code := resp.StatusCode
	var class error
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		class = ErrTransient
	case code == http.StatusNotImplemented:
		class = ErrPermanent
	case code >= 500 && code < 600:
		class = ErrTransient
	case code >= 300 && code < 500:
		class = ErrPermanent
	default: // 1xx or out of range: the service misbehaved, maybe briefly
		class = ErrTransient
	}
	e := &Error{Class: class, Backend: h.name, Status: code}
	if class == ErrTransient {
		e.RetryAfter = parseRetryAfter(resp.Header.Get(HeaderRetryAfter), time.Now())
	}
	msg := http.StatusText(code)
	if msg == "" {
		msg = "unexpected status"
	}
	if code >= 300 && code < 400 {
		msg += " (redirects are not followed: check the backend URL)"
	}
	buf := make([]byte, httpErrorExcerpt)
	n, _ := io.ReadFull(resp.Body, buf)
	if excerpt := cleanText(buf[:n], httpErrorExcerpt); excerpt != "" {
		if tok != "" {
			excerpt = strings.ReplaceAll(excerpt, tok, "[REDACTED]")
		}
		if h.oauth != nil {
			excerpt = scrub(excerpt, h.oauth.secretText())
		}
		msg += ": " + excerpt
	}
	e.Err = errors.New(msg)
	return e
}

// transportError classifies a failure to get or read a response: always
// transient, wrapping the context's error when the context ended.
func (h *HTTP) transportError(ctx context.Context, err error) error {
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err // its message repeats the URL, unredacted
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(cause, cerr) {
		cause = fmt.Errorf("%w: %w", cerr, cause)
	}
	return &Error{Class: ErrTransient, Backend: h.name, Err: fmt.Errorf("POST %s: %w", h.safeURL, cause)}
}

var errBodyTooLarge = errors.New("response body too large")

// readBody reads a body of declared length n (-1 if unknown) up to limit.
func readBody(r io.Reader, n, limit int64) ([]byte, error) {
	if n > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errBodyTooLarge, n, limit)
	}
	if n >= 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", errBodyTooLarge, limit)
	}
	return b, nil
}

// drainClose discards what is left of a body (up to httpDrainLimit) so the
// connection goes back to the pool, and closes it.
func drainClose(b io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, b, httpDrainLimit)
	_ = b.Close()
}

func selectHeaders(h http.Header) nats.Header {
	var out nats.Header
	for _, k := range responseHeaders {
		if v := h.Values(k); len(v) > 0 {
			if out == nil {
				out = make(nats.Header, len(responseHeaders))
			}
			out[k] = v
		}
	}
	return out
}

// redactURL renders u for messages: userinfo dropped, query values hidden
// (both often carry credentials).
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		c.RawQuery = "REDACTED"
	}
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// transportFree reports whether a header is free to set, as opposed to one
// net/http manages itself or that is hop-by-hop.
func transportFree(k string) bool {
	for _, t := range [...]string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
		"Proxy-Connection", "Te", "Trailer", "Upgrade", "Expect"} {
		if strings.EqualFold(k, t) {
			return false
		}
	}
	return true
}

// validHeaderName reports whether k is an RFC 9110 token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v has no control characters but HTAB.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
