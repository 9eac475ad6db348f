package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
)

const testSecret = "s3cr3t-Client-Value"

// tokenServer is a real OAuth2 token endpoint (client credentials) and the
// registry of the tokens it issued, which the resource server checks.
type tokenServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests int
	seq      int
	expiry   map[string]time.Time // issued tokens; deleted when revoked
	lifetime time.Duration
	fail     int    // when set, every request is answered with this status
	failCode string // and this RFC 6749 error code
	echo     bool   // put the request's form, secret included, in the error description
	scopes   []string
}

func newTokenServer(t *testing.T, lifetime time.Duration) *tokenServer {
	ts := &tokenServer{expiry: map[string]time.Time{}, lifetime: lifetime}
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.requests++
	w.Header().Set("Content-Type", "application/json")
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	status, code := ts.fail, ts.failCode
	if status == 0 && (id != "worker" || secret != testSecret || r.PostForm.Get("grant_type") != "client_credentials") {
		status, code = http.StatusUnauthorized, "invalid_client"
	}
	if status != 0 {
		desc := "no"
		if ts.echo {
			desc = "got " + r.PostForm.Encode() + " secret " + secret
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
		return
	}
	ts.scopes = strings.Fields(r.PostForm.Get("scope"))
	ts.seq++
	tok := fmt.Sprintf("tok-%d-%s", ts.seq, strings.Repeat("x", 8))
	ts.expiry[tok] = time.Now().Add(ts.lifetime)
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(ts.lifetime / time.Second)})
}

func (ts *tokenServer) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.requests
}

// check reports whether an Authorization header holds a live token.
func (ts *tokenServer) check(auth string) bool {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	ts.mu.Lock()
	defer ts.mu.Unlock()
	exp, known := ts.expiry[tok]
	return ok && known && time.Now().Before(exp)
}

func (ts *tokenServer) revokeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	clear(ts.expiry)
}

// resourceServer answers 200 "ok" to a live token, 401 otherwise, and
// counts both.
func resourceServer(t *testing.T, ts *tokenServer) (*httptest.Server, func() (ok, denied int)) {
	var mu sync.Mutex
	var ok, denied int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		good := ts.check(r.Header.Get("Authorization"))
		mu.Lock()
		if good {
			ok++
		} else {
			denied++
		}
		mu.Unlock()
		if !good {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte("token " + r.Header.Get("Authorization") + " refused"))
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	return srv, func() (int, int) { mu.Lock(); defer mu.Unlock(); return ok, denied }
}

func secretFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func oauthBackend(t *testing.T, ts *tokenServer, url string) *handlers.HTTP {
	t.Helper()
	return newHTTP(t, handlers.HTTPOptions{Name: "model", URL: url, OAuth2: &handlers.OAuth2Options{
		TokenURL: ts.URL + "/oauth/token", ClientID: "worker", ClientSecretFile: secretFile(t), Scopes: []string{"tasks", "read"},
	}})
}

func TestOAuth2SharesOneToken(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	srv, counts := resourceServer(t, ts)
	be := oauthBackend(t, ts, srv.URL)

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if _, err := call(t, be, &handlers.Request{TaskID: fmt.Sprint(i), Attempt: 1}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call: %v", err)
	}
	if n := ts.count(); n != 1 {
		t.Errorf("token requests: got %d, want 1 for 20 concurrent calls", n)
	}
	if ok, denied := counts(); ok != 20 || denied != 0 {
		t.Errorf("backend: got %d accepted, %d refused; want 20, 0", ok, denied)
	}
	if got := strings.Join(ts.scopes, " "); got != "tasks read" {
		t.Errorf("scopes: got %q, want %q", got, "tasks read")
	}
}

func TestOAuth2RefreshesBeforeExpiry(t *testing.T) {
	ts := newTokenServer(t, 2*time.Second)
	srv, counts := resourceServer(t, ts)
	be := oauthBackend(t, ts, srv.URL)
	start := time.Now()

	// Calls go on through the token's lifetime and past it; the backend
	// refuses an expired token, so none may be sent with one.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for ts.count() < 2 || time.Since(start) < 3*time.Second {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh within 20s of a 2s token (%d token requests)", ts.count())
		}
		if _, err := call(t, be, &handlers.Request{Attempt: 1}); err != nil {
			t.Fatalf("call: %v", err)
		}
		<-tick.C
	}
	if n := ts.count(); n < 2 || n > 3 {
		t.Errorf("token requests over 3s of 2s tokens: got %d, want 2 or 3", n)
	}
	if _, denied := counts(); denied != 0 {
		t.Errorf("backend refused %d calls; a token must be replaced before it expires", denied)
	}
}

func TestOAuth2RevokedTokenIsReplacedOnce(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	srv, counts := resourceServer(t, ts)
	be := oauthBackend(t, ts, srv.URL)
	if _, err := call(t, be, &handlers.Request{Attempt: 1}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	ts.revokeAll()
	if _, err := call(t, be, &handlers.Request{Attempt: 1}); err != nil {
		t.Fatalf("call after revocation: got %v, want success with a new token", err)
	}
	if n := ts.count(); n != 2 {
		t.Errorf("token requests: got %d, want 2", n)
	}
	if ok, denied := counts(); ok != 2 || denied != 1 {
		t.Errorf("backend: got %d accepted, %d refused; want 2, 1", ok, denied)
	}
}

func TestOAuth2PersistentUnauthorizedIsPermanent(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte("no: " + r.Header.Get("Authorization")))
	}))
	t.Cleanup(srv.Close)
	be := oauthBackend(t, ts, srv.URL)
	_, err := call(t, be, &handlers.Request{Attempt: 1})
	if !errors.Is(err, handlers.ErrPermanent) || handlers.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("got %v, want a permanent 401", err)
	}
	if n := ts.count(); n != 2 {
		t.Errorf("token requests: got %d, want 2 (one refresh, no loop)", n)
	}
	if strings.Contains(err.Error(), "tok-") {
		t.Errorf("error text holds a token: %q", err)
	}
}

func TestOAuth2TokenEndpointFailures(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		code    string
		secret  string
		want    error
		wantMsg string
	}{
		{name: "server error is transient", status: 503, code: "temporarily_unavailable", want: handlers.ErrTransient, wantMsg: "status 503: temporarily_unavailable"},
		{name: "rate limited is transient", status: 429, code: "slow_down", want: handlers.ErrTransient, wantMsg: "status 429"},
		{name: "wrong secret is permanent", secret: "wrong", want: handlers.ErrPermanent, wantMsg: "status 401: invalid_client"},
		{name: "invalid scope is permanent", status: 400, code: "invalid_scope", want: handlers.ErrPermanent, wantMsg: "status 400: invalid_scope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTokenServer(t, time.Hour)
			ts.fail, ts.failCode, ts.echo = tc.status, tc.code, true
			srv, counts := resourceServer(t, ts)
			secret := testSecret
			if tc.secret != "" {
				secret = tc.secret
			}
			be := newHTTP(t, handlers.HTTPOptions{Name: "model", URL: srv.URL, Getenv: func(string) string { return secret },
				OAuth2: &handlers.OAuth2Options{TokenURL: ts.URL + "/token?key=hidden", ClientID: "worker", ClientSecretEnv: "SECRET"}})
			_, err := call(t, be, &handlers.Request{Attempt: 1})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantMsg) || !strings.HasPrefix(msg, "model: ") {
				t.Errorf("error %q: want it to start with the backend and hold %q", msg, tc.wantMsg)
			}
			for _, secret := range []string{secret, "hidden"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q holds %q", msg, secret)
				}
			}
			if ok, denied := counts(); ok+denied != 0 {
				t.Errorf("backend called %d times without a token", ok+denied)
			}
		})
	}
}

func TestOAuth2TokenEndpointDown(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	srv, _ := resourceServer(t, ts)
	be := oauthBackend(t, ts, srv.URL)
	ts.Close()
	_, err := call(t, be, &handlers.Request{Attempt: 1})
	if !errors.Is(err, handlers.ErrTransient) || !strings.Contains(err.Error(), "oauth2 token request") {
		t.Fatalf("got %v, want a transient token request failure", err)
	}
}

func TestOAuth2CallerCancelledWhileWaiting(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"late","token_type":"bearer","expires_in":3600}`))
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	be, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "m", URL: "http://127.0.0.1:1/", Getenv: func(string) string { return "x" },
		OAuth2: &handlers.OAuth2Options{TokenURL: slow.URL, ClientID: "c", ClientSecretEnv: "S"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = be.Call(ctx, &handlers.Request{Attempt: 1})
	if !errors.Is(err, handlers.ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a transient deadline error", err)
	}
	// Close stops the token request still in flight and returns.
	done := make(chan struct{})
	go func() { _ = be.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not stop the token request within 10s")
	}
}

func TestOAuth2Options(t *testing.T) {
	file := secretFile(t)
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ok := handlers.OAuth2Options{TokenURL: "https://auth.example.com/token", ClientID: "c", ClientSecretFile: file}
	tests := []struct {
		name string
		give func(o *handlers.HTTPOptions)
		want string // "" for no error
	}{
		{"valid", func(*handlers.HTTPOptions) {}, ""},
		{"no token url", func(o *handlers.HTTPOptions) { o.OAuth2.TokenURL = "" }, "token_url is required"},
		{"relative token url", func(o *handlers.HTTPOptions) { o.OAuth2.TokenURL = "/token" }, "absolute http or https"},
		{"no client id", func(o *handlers.HTTPOptions) { o.OAuth2.ClientID = "" }, "client_id is required"},
		{"no secret", func(o *handlers.HTTPOptions) { o.OAuth2.ClientSecretFile = "" }, "needs client_secret_file or client_secret_env"},
		{"two secrets", func(o *handlers.HTTPOptions) { o.OAuth2.ClientSecretEnv = "S" }, "exclusive"},
		{"missing secret file", func(o *handlers.HTTPOptions) { o.OAuth2.ClientSecretFile = file + ".nope" }, "oauth2 client secret"},
		{"empty secret file", func(o *handlers.HTTPOptions) { o.OAuth2.ClientSecretFile = empty }, "is empty"},
		{"unset secret env", func(o *handlers.HTTPOptions) { o.OAuth2.ClientSecretFile, o.OAuth2.ClientSecretEnv = "", "UNSET" }, "UNSET is unset or empty"},
		{"scope in params", func(o *handlers.HTTPOptions) { o.OAuth2.EndpointParams = map[string][]string{"scope": {"x"}} }, "may not set scope"},
		{"with a bearer token", func(o *handlers.HTTPOptions) { o.BearerTokenEnv = "T" }, "exclusive"},
		{"with an Authorization header", func(o *handlers.HTTPOptions) { o.Headers = map[string]string{"Authorization": "x"} }, "conflicts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oo := ok
			o := handlers.HTTPOptions{Name: "m", URL: "http://127.0.0.1:1/", OAuth2: &oo, Getenv: func(string) string { return "" }}
			tc.give(&o)
			be, err := handlers.NewHTTP(o)
			if be != nil {
				_ = be.Close()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (!errors.Is(err, handlers.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want ErrInvalidOption with %q", err, tc.want)
			}
		})
	}
}

// A token endpoint failing while the token is still valid does not fail
// calls, and is not asked on every call.
func TestOAuth2FailedEarlyRefreshKeepsToken(t *testing.T) {
	ts := newTokenServer(t, 2*time.Second)
	srv, counts := resourceServer(t, ts)
	be := oauthBackend(t, ts, srv.URL)
	if _, err := call(t, be, &handlers.Request{Attempt: 1}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	ts.mu.Lock()
	ts.fail, ts.failCode = http.StatusServiceUnavailable, "temporarily_unavailable"
	issued := time.Now()
	ts.mu.Unlock()
	// Calls in the refresh window (after 1.5s) and before the expiry (2s).
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	calls := 0
	for time.Since(issued) < 1900*time.Millisecond {
		if time.Since(issued) > 1550*time.Millisecond {
			if _, err := call(t, be, &handlers.Request{Attempt: 1}); err != nil {
				t.Fatalf("call with a valid token while the endpoint fails: %v", err)
			}
			calls++
		}
		<-tick.C
	}
	if calls < 8 {
		t.Skipf("only %d calls in the 0.35s window: the machine is too busy to tell", calls)
	}
	if n := ts.count(); n > 6 {
		t.Errorf("token requests: got %d for %d calls in 0.35s, want at most 6 (not one per call)", n, calls)
	}
	if _, denied := counts(); denied != 0 {
		t.Errorf("backend refused %d calls", denied)
	}
}
