package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// oauthServer is a real OAuth2 token endpoint (client credentials) issuing
// 2-second tokens, and the registry the resource server checks them in.
type oauthServer struct {
	*httptest.Server
	secret string

	mu       sync.Mutex
	requests int
	seq      int
	issued   []string
	expiry   map[string]time.Time
	first    time.Time // when the first token was issued
}

func newOAuthServer(t *testing.T, secret string) *oauthServer {
	o := &oauthServer{secret: secret, expiry: map[string]time.Time{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id, sec, ok := r.BasicAuth()
		if !ok {
			id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		o.requests++
		w.Header().Set("Content-Type", "application/json")
		if id != "breakwater" || sec != o.secret {
			// Echo what came in, secret included: the worker must not repeat it.
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client",
				"error_description": fmt.Sprintf("unknown client %s with secret %s", id, sec)})
			return
		}
		o.seq++
		tok := fmt.Sprintf("access-%d-%d", o.seq, time.Now().UnixNano())
		now := time.Now()
		if o.first.IsZero() {
			o.first = now
		}
		o.issued = append(o.issued, tok)
		o.expiry[tok] = now.Add(2 * time.Second)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "bearer", "expires_in": 2})
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *oauthServer) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.requests
}

func (o *oauthServer) live(auth string) bool {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	o.mu.Lock()
	defer o.mu.Unlock()
	exp, known := o.expiry[tok]
	return ok && known && time.Now().Before(exp)
}

func (o *oauthServer) revokeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.expiry)
}

func (o *oauthServer) tokens() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.issued...)
}

// TestOAuth2ClientCredentials runs the built worker against a real token
// endpoint issuing 2-second tokens: 20 tasks share one token (at most 3
// token requests), a task after the expiry gets a new token, a revoked
// token is refreshed once and the task succeeds, a client the endpoint
// rejects dead-letters its task, the backend's adaptive limit and retry
// budget are in /metrics and its health events, and neither the secret nor any token
// appears in the worker's output, the DLQ, /metrics or the health events.
func TestOAuth2ClientCredentials(t *testing.T) {
	const secret = "oauthCLIENTsecret9"
	auth := newOAuthServer(t, secret)
	var mu sync.Mutex
	accepted, refused := 0, 0
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		live := auth.live(r.Header.Get("Authorization"))
		mu.Lock()
		if live {
			accepted++
		} else {
			refused++
		}
		mu.Unlock()
		if !live {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "refused "+r.Header.Get("Authorization"))
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(backend.Close)
	counts := func() (int, int) { mu.Lock(); defer mu.Unlock(); return accepted, refused }

	s := startNATS(t)
	secretFile := writeFile(t, "model.secret", secret+"\n")
	cfg := writeFile(t, "worker.yaml", fmt.Sprintf(`backends:
  model:
    http: {url: %[1]q}
    max_concurrency: {adaptive: {max: 50}}
    retry: {max_attempts: 2, budget: 0.2}
    auth:
      oauth2: {token_url: %[2]q, client_id: breakwater, client_secret_file: %[3]q, scopes: [tasks]}
  stranger:
    http: {url: %[1]q}
    auth:
      oauth2: {token_url: %[2]q, client_id: stranger, client_secret_file: %[3]q}
routes:
  model: {backends: [model]}
  stranger: {backends: [stranger]}
`, backend.URL+"/run", auth.URL+"/oauth/token", secretFile))
	w := startWorker(t, s, "--config", cfg)
	c := connect(t, s)

	// 20 tasks share one token.
	c.publishTasks("model", "m", 20, []byte(`{"n":1}`))
	c.waitSubjects("RESULTS", "results.model.>", 20, 60*time.Second)
	if n := auth.count(); n < 1 || n > 3 {
		t.Errorf("token requests for 20 tasks: got %d, want 1 to 3", n)
	}
	before := auth.count()
	t.Logf("token requests for 20 tasks: %d", before)

	// Past the first token's lifetime, a task gets a new token.
	testkit.Eventually(t, 10*time.Second, "the first token to expire", func() (bool, string) {
		auth.mu.Lock()
		defer auth.mu.Unlock()
		return !auth.first.IsZero() && time.Since(auth.first) > 2500*time.Millisecond, "not yet"
	})
	c.publishTask("model", "after-expiry", []byte(`{"n":2}`))
	c.lastMsg("RESULTS", "results.model.after-expiry", 30*time.Second)
	if n := auth.count(); n <= before {
		t.Errorf("token requests after the expiry: got %d, want more than %d", n, before)
	}
	if _, r := counts(); r != 0 {
		t.Errorf("the backend refused %d calls before any revocation: an expired token was sent", r)
	}

	// A revoked token: one 401, one new token, and the task succeeds.
	before = auth.count()
	auth.revokeAll()
	c.publishTask("model", "after-revoke", []byte(`{"n":3}`))
	res := c.lastMsg("RESULTS", "results.model.after-revoke", 30*time.Second)
	wantHeader(t, res.Header, "Task-Status", "ok")
	if n := auth.count(); n != before+1 {
		t.Errorf("token requests after the revocation: got %d, want %d", n, before+1)
	}
	if _, r := counts(); r != 1 {
		t.Errorf("backend refusals: got %d, want the revoked token's 1", r)
	}

	// A client the token endpoint rejects is a permanent failure.
	c.publishTask("stranger", "s1", []byte(`{"n":4}`))
	entry := c.lastMsg("DLQ", "dlq.stranger", 30*time.Second)
	wantHeader(t, entry.Header, "Dlq-Reason", "rejected")
	if e := entry.Header.Get("Dlq-Error"); !strings.Contains(e, "invalid_client") {
		t.Errorf("Dlq-Error %q: want it to name the token endpoint's invalid_client", e)
	}
	if a, _ := counts(); a != 22 {
		t.Errorf("backend calls accepted: got %d, want 22", a)
	}

	metrics := scrape(t, "http://"+w.httpAddr+"/metrics")
	health := c.healthEvents()
	// The adaptive limit and the retry budget are visible.
	for _, want := range []string{`breakwater_backend_concurrency_limit{backend="model"} 20`, `breakwater_backend_retry_budget_remaining{backend="model"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	ev := string(c.lastMsg("HEALTH", "health.backend.model", 10*time.Second).Data)
	if !strings.Contains(ev, `"concurrency_limit":`) || !strings.Contains(ev, `"retry_budget":`) {
		t.Errorf("health.backend.model lacks concurrency_limit or retry_budget: %s", ev)
	}
	w.Signal(syscall.SIGTERM)
	w.Wait(30 * time.Second)

	outputs := map[string]string{
		"worker stderr": w.Stderr(),
		"worker stdout": w.Stdout(),
		"DLQ entry":     fmt.Sprint(entry.Header) + string(entry.Data),
		"/metrics":      metrics,
		"health events": health,
	}
	planted := append([]string{secret}, auth.tokens()...)
	for _, p := range planted {
		for out, text := range outputs {
			if strings.Contains(text, p) {
				t.Errorf("%q (the secret or a token) appears in the %s", p, out)
			}
		}
	}
}
