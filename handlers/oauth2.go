package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Defaults of OAuth2Options.
const (
	// OAuth2TokenTimeout bounds one request to the token endpoint.
	OAuth2TokenTimeout = 10 * time.Second
	// OAuth2MaxEarlyExpiry is how long before its expiry a token is
	// replaced at most (golang.org/x/oauth2's own margin); a short-lived
	// token is replaced after three quarters of its lifetime instead.
	OAuth2MaxEarlyExpiry = 10 * time.Second
)

// OAuth2Options configure the OAuth2 client credentials grant (RFC 6749
// section 4.4) of an HTTP backend: its calls carry "Authorization: Bearer
// <access token>", the token being requested from TokenURL with ClientID
// and the client secret.
//
// One token is shared by all of a backend's calls. It is replaced in the
// background once three quarters of its lifetime (at most
// OAuth2MaxEarlyExpiry before its expiry) have passed, calls going on with
// the old one meanwhile; only when no valid token is left do calls wait for
// the token endpoint, and then for a single request between them. A call
// answered 401 drops the token it was sent with, takes a new one and is
// sent once more; a second 401 is the call's (permanent) failure.
//
// A token endpoint that cannot be reached or answers 408, 429 or 5xx fails
// the call as transient (it counts for the backend's breaker); one that
// answers 400, 401 or 403 (invalid_client, unauthorized_client,
// invalid_scope, ...) has rejected the client, which fails the call as
// permanent: trying again cannot help until the config changes. Errors
// name the token URL (without userinfo or query) and the endpoint's error
// code, never the secret or a token.
type OAuth2Options struct {
	// TokenURL is the token endpoint (http or https). Required.
	TokenURL string
	// ClientID identifies the client. Required.
	ClientID string
	// ClientSecretFile holds the client secret. It is read at NewHTTP (a
	// missing or empty file is an error) and again before each token
	// request when its modification time or size changed, so a rotated
	// secret is used without a restart.
	ClientSecretFile string
	// ClientSecretEnv names an environment variable holding the secret,
	// read once at NewHTTP. Exactly one of ClientSecretFile and
	// ClientSecretEnv must be set.
	ClientSecretEnv string
	// Scopes are requested with the token (the scope parameter); default
	// none.
	Scopes []string
	// EndpointParams are further parameters of the token request
	// (audience, resource, ...). They may not repeat scope.
	EndpointParams map[string][]string
	// TokenTimeout bounds one token request; OAuth2TokenTimeout when zero.
	TokenTimeout time.Duration
}

// oauthSource yields the shared access token of one backend. It is safe
// for concurrent use; close stops a background refresh and waits for it.
type oauthSource struct {
	name    string                   // the backend's, for Error.Backend
	conf    clientcredentials.Config // ClientSecret is set by the fetching goroutine alone
	secret  *tokenSource
	client  *http.Client
	timeout time.Duration
	safeURL string

	base   context.Context // parent of every token request; cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // running fetches

	mu        sync.Mutex
	tok       string    // current access token; "" when none
	expiry    time.Time // zero: no known expiry
	refreshAt time.Time // zero: no refresh planned
	call      *tokenCall
}

// tokenCall is one request to the token endpoint, shared by every caller
// that waits for it.
type tokenCall struct {
	done chan struct{}
	tok  string
	err  error
}

// newOAuthSource checks o and reads the secret; it does not contact the
// token endpoint. bad formats an ErrInvalidOption error.
func newOAuthSource(name string, o *OAuth2Options, getenv func(string) string, bad func(string, ...any) error) (*oauthSource, error) {
	u, err := url.Parse(o.TokenURL)
	switch {
	case o.TokenURL == "":
		return nil, bad("oauth2 token_url is required")
	case err != nil:
		return nil, bad("oauth2 token_url is not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, bad("oauth2 token_url %s: want an absolute http or https URL", redactURL(u))
	case o.ClientID == "":
		return nil, bad("oauth2 client_id is required")
	case o.ClientSecretFile != "" && o.ClientSecretEnv != "":
		return nil, bad("oauth2 client_secret_file and client_secret_env are exclusive")
	case o.ClientSecretFile == "" && o.ClientSecretEnv == "":
		return nil, bad("oauth2 needs client_secret_file or client_secret_env")
	}
	for k := range o.EndpointParams {
		if k == "scope" || k == "grant_type" || k == "client_id" || k == "client_secret" {
			return nil, bad("oauth2 endpoint_params may not set %s", k)
		}
	}
	s := &oauthSource{
		name: name,
		conf: clientcredentials.Config{
			ClientID: o.ClientID, TokenURL: o.TokenURL, Scopes: o.Scopes,
			EndpointParams: url.Values(o.EndpointParams),
		},
		timeout: o.TokenTimeout,
		safeURL: redactURL(u),
	}
	if s.timeout <= 0 {
		s.timeout = OAuth2TokenTimeout
	}
	if o.ClientSecretFile != "" {
		s.secret = &tokenSource{path: o.ClientSecretFile, kind: "oauth2 client secret"}
		if _, err := s.secret.get(); err != nil {
			return nil, bad("%v", err)
		}
	} else {
		if getenv == nil {
			getenv = os.Getenv
		}
		v := strings.TrimSpace(getenv(o.ClientSecretEnv))
		if v == "" {
			return nil, bad("environment variable %s is unset or empty", o.ClientSecretEnv)
		}
		s.secret = &tokenSource{value: v}
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// token returns the access token to send, waiting for the token endpoint
// only when there is no valid one. Its errors are *Error values.
func (s *oauthSource) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	now := time.Now()
	if s.tok != "" && (s.refreshAt.IsZero() || now.Before(s.refreshAt)) {
		tok := s.tok
		s.mu.Unlock()
		return tok, nil
	}
	c := s.startFetch()
	if s.tok != "" && (s.expiry.IsZero() || now.Before(s.expiry)) {
		tok := s.tok // still valid: the refresh goes on in the background
		s.mu.Unlock()
		return tok, nil
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.tok, c.err
	case <-ctx.Done():
		return "", &Error{Class: ErrTransient, Backend: s.name, Err: fmt.Errorf("wait for an oauth2 token from %s: %w", s.safeURL, ctx.Err())}
	}
}

// invalidate drops tok if it is still the current token, so that the next
// token call requests a new one (a backend answered 401 to it). Calls that
// saw the same 401 at once drop it once between them.
func (s *oauthSource) invalidate(tok string) {
	s.mu.Lock()
	if s.tok == tok {
		s.tok, s.expiry, s.refreshAt = "", time.Time{}, time.Time{}
	}
	s.mu.Unlock()
}

// startFetch returns the running token request, starting one if none is.
// s.mu must be held.
func (s *oauthSource) startFetch() *tokenCall {
	if s.call != nil {
		return s.call
	}
	c := &tokenCall{done: make(chan struct{})}
	s.call = c
	s.wg.Add(1)
	// The request is detached from the caller that started it: others wait
	// for it too, and a cancelled caller must not fail them.
	go func() {
		defer s.wg.Done()
		tok, exp, err := s.fetch()
		var e *Error
		if errors.As(err, &e) {
			e.Backend = s.name // before the error is shared with the waiters
		}
		s.mu.Lock()
		if now := time.Now(); err == nil {
			s.tok, s.expiry, s.refreshAt = tok, exp, refreshTime(now, exp)
		} else if s.tok != "" && now.Before(s.expiry) {
			// A failed early refresh: the token still serves; try again a
			// little later rather than on every call.
			s.refreshAt = now.Add(min(time.Second, s.expiry.Sub(now)/2))
		}
		s.call = nil
		s.mu.Unlock()
		c.tok, c.err = tok, err
		close(c.done)
	}()
	return c
}

// refreshTime is when a token expiring at exp, received at now, is
// replaced: after three quarters of its lifetime, at most
// OAuth2MaxEarlyExpiry before it expires. Zero when exp is unknown.
func refreshTime(now, exp time.Time) time.Time {
	if exp.IsZero() {
		return time.Time{}
	}
	early := min(exp.Sub(now)/4, OAuth2MaxEarlyExpiry)
	return exp.Add(-max(early, 0))
}

// fetch requests a token. Only one fetch runs at a time (startFetch), so it
// may set conf.ClientSecret.
func (s *oauthSource) fetch() (string, time.Time, error) {
	secret, err := s.secret.get()
	if err != nil {
		return "", time.Time{}, Transient(err)
	}
	s.conf.ClientSecret = secret
	ctx, cancel := context.WithTimeout(s.base, s.timeout)
	defer cancel()
	if s.client != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, s.client)
	}
	t, err := s.conf.Token(ctx)
	if err != nil {
		return "", time.Time{}, s.classify(err, secret)
	}
	switch {
	case t.AccessToken == "" || !validHeaderValue(t.AccessToken):
		return "", time.Time{}, Transient(fmt.Errorf("oauth2 token endpoint %s returned an unusable access token", s.safeURL))
	case t.TokenType != "" && !strings.EqualFold(t.TokenType, "bearer"):
		return "", time.Time{}, Permanent(fmt.Errorf("oauth2 token endpoint %s returned a token of type %q, want bearer", s.safeURL, cleanText([]byte(t.TokenType), 32)))
	}
	return t.AccessToken, t.Expiry, nil
}

// classify turns a token request's failure into a transient or permanent
// *Error whose text holds neither the secret nor the endpoint's body.
func (s *oauthSource) classify(err error, secret string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		code := re.Response.StatusCode
		msg := fmt.Sprintf("oauth2 token endpoint %s: status %d", s.safeURL, code)
		if re.ErrorCode != "" {
			msg += ": " + scrub(cleanText([]byte(re.ErrorCode), 64), secret)
			if re.ErrorDescription != "" {
				msg += " (" + scrub(cleanText([]byte(re.ErrorDescription), 200), secret) + ")"
			}
		}
		switch code {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
			return Permanent(fmt.Errorf("%s: the client was rejected", msg))
		}
		return Transient(errors.New(msg))
	}
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err // its message repeats the URL, unredacted
	}
	if errors.Is(err, context.Canceled) && s.base.Err() != nil {
		return Transient(fmt.Errorf("oauth2 token request to %s: backend closed", s.safeURL))
	}
	return Transient(fmt.Errorf("oauth2 token request to %s: %s", s.safeURL, scrub(cause.Error(), secret)))
}

// scrub replaces secret in s.
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[REDACTED]")
}

// secretText is the client secret, for scrubbing response texts.
func (s *oauthSource) secretText() string {
	v, _ := s.secret.get()
	return v
}

// close stops a running token request and waits for it.
func (s *oauthSource) close() {
	s.cancel()
	s.wg.Wait()
}
