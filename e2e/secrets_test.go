package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Secrets planted everywhere a user can put one (the environment, a flag,
// the config's token file, task headers, a backend's error body that
// echoes its request) appear in nothing the worker writes or stores: its
// log, the DLQ entry and its history, the error reply, /metrics and the
// health events.
func TestSecretsNeverLeave(t *testing.T) {
	secrets := map[string]string{
		"nats token (env)":           "natsTOKENsecret1",
		"bearer token file":          "bearerFILEsecret2",
		"Authorization header":       "authHDRsecret3",
		"Cookie header":              "cookieHDRsecret4",
		"X-Api-Key header":           "apikeyHDRsecret5",
		"configured redacted header": "customHDRsecret6",
		"proxy authorization header": "proxyHDRsecret7",
		"token in the URL user info": "urlINFOsecret8",
	}
	// The backend rejects every call (400) and echoes every header it got.
	echoed := make(chan string, 10)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		var keys []string
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		w.WriteHeader(http.StatusBadRequest)
		var body strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&body, "%s: %s\n", k, strings.Join(r.Header[k], ","))
		}
		_, _ = io.WriteString(w, body.String())
		select {
		case echoed <- body.String():
		default:
		}
	}))
	t.Cleanup(backend.Close)

	s := startNATS(t)
	tokenFile := writeFile(t, "token", secrets["bearer token file"]+"\n")
	cfg := writeFile(t, "worker.yaml", fmt.Sprintf(`dlq: {redact_headers: ["X-Custom-*"]}
backends:
  svc:
    http: {url: %q}
    auth: {bearer_token_file: %q}
    forward_headers: ["X-*", "Cookie"]
routes:
  work: {backends: [svc]}
`, backend.URL+"/run", tokenFile))
	url := strings.Replace(s.URL(), "nats://", "nats://"+secrets["token in the URL user info"]+"@", 1)
	w := startWorkerEnv(t, []string{"NATS_TOKEN=" + secrets["nats token (env)"]}, "--config", cfg, "--nats-url", url)
	w.waitReady()

	c := connect(t, s)
	inbox := nats.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	c.publishTask("work", "leak1", []byte(`{"q":1}`),
		"Task-Reply-To", inbox,
		"Authorization", "Bearer "+secrets["Authorization header"],
		"Proxy-Authorization", "Basic "+secrets["proxy authorization header"],
		"Cookie", "session="+secrets["Cookie header"],
		"X-Api-Key", secrets["X-Api-Key header"],
		"X-Custom-Secret", secrets["configured redacted header"],
	)
	reply, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no error reply: %v", err)
	}
	entry := c.lastMsg("DLQ", "dlq.work", 30*time.Second)
	// The error body really carried secrets (so redaction had work to do).
	if body := <-echoed; !strings.Contains(body, secrets["bearer token file"]) || !strings.Contains(body, secrets["X-Api-Key header"]) {
		t.Fatalf("the backend's echo lacks the planted secrets:\n%s", body)
	}
	wantHeader(t, entry.Header, "Dlq-Reason", "rejected")
	if !strings.Contains(entry.Header.Get("Dlq-Error"), "400") {
		t.Errorf("Dlq-Error %q does not say what failed", entry.Header.Get("Dlq-Error"))
	}

	metrics := scrape(t, "http://"+w.httpAddr+"/metrics")
	health := c.healthEvents()
	w.Signal(syscall.SIGTERM)
	w.Wait(30 * time.Second)

	outputs := map[string]string{
		"worker stderr": w.Stderr(),
		"worker stdout": w.Stdout(),
		"DLQ entry":     fmt.Sprint(entry.Header),
		"error reply":   fmt.Sprint(reply.Header) + string(reply.Data),
		"/metrics":      metrics,
		"health events": health,
	}
	for where, secret := range secrets {
		for out, text := range outputs {
			if strings.Contains(text, secret) {
				t.Errorf("the %s's secret appears in the %s", where, out)
			}
		}
	}
}
