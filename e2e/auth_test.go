package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

// The users of deploy/nats/auth.conf.
const (
	workerUser   = "breakwater-worker"
	clientUser   = "breakwater-client"
	operatorUser = "breakwater-operator"
)

// authEnv are the environment variables auth.conf reads its passwords from.
var authEnv = map[string]string{
	workerUser:   "BW_WORKER_PASSWORD",
	clientUser:   "BW_CLIENT_PASSWORD",
	operatorUser: "BW_OPERATOR_PASSWORD",
}

// authServer is a nats-server whose config includes the repository's
// deploy/nats/auth.conf, with fresh passwords in its environment.
type authServer struct {
	*testkit.NATSProcess
	password map[string]string // user -> password
}

func startNATSAuth(t testing.TB) *authServer {
	t.Helper()
	pw := map[string]string{}
	var env []string
	for user, name := range authEnv {
		// A letter first: the server parses the value like a config value.
		pw[user] = "bw" + randomHex(t, 16)
		env = append(env, name+"="+pw[user])
	}
	s := startNATSWith(t, func(dir string) string {
		rel, err := filepath.Rel(dir, deployPath("nats", "auth.conf"))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("include %q\n", rel)
	}, env)
	return &authServer{NATSProcess: s, password: pw}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// as returns the flags that connect a command as user.
func (s *authServer) as(user string) []string {
	return []string{"--nats-url", s.URL(), "--user", user, "--password", s.password[user]}
}

// publisher runs the publisher as user.
func (s *authServer) publisher(t testing.TB, user string, args ...string) result {
	t.Helper()
	return runPublisher(t, nil, append(s.as(user), args...)...)
}

// authConn is a test's connection as one of the users; it records the
// permission errors the server sends it.
type authConn struct {
	*client
	user string

	mu     sync.Mutex
	denied []string
}

// connectAs connects as user, with the inbox prefix the Breakwater
// commands of that user take.
func (s *authServer) connectAs(t testing.TB, user string) *authConn {
	t.Helper()
	c := &authConn{user: user}
	inbox := map[string]string{workerUser: bus.WorkerInboxPrefix, operatorUser: bus.OperatorInboxPrefix, clientUser: "_INBOX"}[user]
	c.client = connectURL(t, s.URL(), nats.Name("e2e "+user), nats.UserInfo(user, s.password[user]), nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.denied = append(c.denied, err.Error())
			c.mu.Unlock()
		}))
	return c
}

// wasDenied reports whether the server refused what (`Publish to "SUBJ"`
// or `Subscription to "SUBJ"`).
func (c *authConn) wasDenied(what string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.denied, func(e string) bool { return strings.Contains(e, what) })
}

// refusePublish publishes data on subject with a reply inbox, as a request
// would, and waits for the server to refuse it. The server checks a
// publish as it reads it, so once refused the message cannot take effect
// later: outcomes can be checked right after.
func (c *authConn) refusePublish(subject string, data []byte) {
	c.t.Helper()
	if err := c.nc.PublishRequest(subject, c.nc.NewInbox(), data); err != nil {
		c.t.Fatalf("%s: publish %s: %v", c.user, subject, err)
	}
	if err := c.nc.Flush(); err != nil {
		c.t.Fatal(err)
	}
	what := fmt.Sprintf("Publish to %q", subject)
	testkit.Eventually(c.t, 5*time.Second, c.user+" refused "+what, func() (bool, string) {
		return c.wasDenied(what), "not refused"
	})
}

// request sends a request as c's user and returns the reply.
func (c *authConn) request(subject, body string) *nats.Msg {
	c.t.Helper()
	m, err := c.nc.Request(subject, []byte(body), 10*time.Second)
	if err != nil {
		c.t.Fatalf("%s: request %s: %v", c.user, subject, err)
	}
	return m
}

// violations returns the server's log lines about refused publishes and
// subscriptions of user.
func (s *authServer) violations(user string) []string {
	var out []string
	for _, line := range strings.Split(s.Proc.Stderr(), "\n") {
		if strings.Contains(line, "Violation") && strings.Contains(line, "/user:"+user+`"`) {
			out = append(out, line)
		}
	}
	return out
}

// TestAuthLeastPrivilege runs workers, the publisher and the test's own
// clients against a real nats-server under deploy/nats/auth.conf: the
// worker does all its work with its user alone (the server logs no
// refusal for it), the client publishes, waits and reads results and is
// refused everything else (each refusal checked on its outcome), and the
// operator runs the admin plane, the DLQ commands and health.
func TestAuthLeastPrivilege(t *testing.T) {
	t.Parallel()
	s := startNATSAuth(t)
	cfg := writeFile(t, "worker.yaml", `worker: {max_deliver: 2, ack_wait: 3s}
health: {interval: 200ms}
backends:
  echoer: {builtin: echo}
  nope: {builtin: fail}
  down: {builtin: unavailable, retry: {max_attempts: 1}}
  boom: {builtin: crash}
  svc:
    builtin: echo
    breaker: {failure_threshold: 3, delay: 1m}
routes:
  echo: {backends: [echoer]}
  cached: {backends: [echoer], cache: {ttl: 1m, shared: true}}
  nope: {backends: [nope]}
  down: {backends: [down]}
  boom: {backends: [boom]}
  guarded: {backends: [svc]}
`)
	workerArgs := func(id string) []string {
		return []string{"--config", cfg, "--id", id, "--user", workerUser, "--password", s.password[workerUser]}
	}
	w1 := startWorker(t, s.NATSProcess, workerArgs("w1")...)
	op := s.connectAs(t, operatorUser)
	cl := s.connectAs(t, clientUser)
	// The client listens to every inbox it may: it must hear none of the
	// workers' deliveries and none of the operator's DLQ reads.
	overheard := make(chan *nats.Msg, 100000)
	if _, err := cl.nc.ChanSubscribe("_INBOX.>", overheard); err != nil {
		t.Fatal(err)
	}

	// --- The worker's work, driven by the client and watched by the operator.
	{
		t.Log("step: client publishes, waits and reads results")
		r := s.publisher(t, clientUser, "publish", "echo", `{"n":1}`, "--id", "e1", "--wait")
		if r.code != 0 || strings.TrimSpace(r.stdout) != `{"n":1}` {
			t.Fatalf("publish --wait: exit %d, stdout %q", r.code, r.stdout)
		}
		r = s.publisher(t, clientUser, "result", "echo", "e1")
		if r.code != 0 || strings.TrimSpace(r.stdout) != `{"n":1}` {
			t.Fatalf("result: exit %d, stdout %q", r.code, r.stdout)
		}
		follow := testkit.StartProcess(t, "publisher results", bin.publisher, nil, append(s.as(clientUser), "results", "echo", "--all")...)
		testkit.Eventually(t, 10*time.Second, "publisher results to print e1", func() (bool, string) {
			return strings.Contains(follow.Stdout(), "e1"), follow.Stderr()
		})
		follow.Signal(syscall.SIGTERM)
		follow.Wait(testkit.StopTimeout)
	}
	{
		t.Log("step: cache bucket")
		for _, id := range []string{"c1", "c2"} {
			if r := s.publisher(t, clientUser, "publish", "cached", "same", "--id", id, "--wait"); r.code != 0 {
				t.Fatalf("publish cached %s: exit %d", id, r.code)
			}
		}
		m := op.lastMsg("RESULTS", "results.cached.c2", resultTimeout)
		wantHeader(t, m.Header, "Task-Cache", "hit")
		if n := op.msgs("KV_RESULT_CACHE"); n == 0 {
			t.Error("the shared cache bucket KV_RESULT_CACHE is empty")
		}
	}
	{
		t.Log("step: attempt history and DLQ")
		if r := s.publisher(t, clientUser, "publish", "nope", "p-nope", "--id", "n1"); r.code != 0 {
			t.Fatalf("publish nope: exit %d", r.code)
		}
		if r := s.publisher(t, clientUser, "publish", "down", "p-down", "--id", "d1"); r.code != 0 {
			t.Fatalf("publish down: exit %d", r.code)
		}
		d := op.lastMsg("DLQ", "dlq.nope", resultTimeout)
		wantHeader(t, d.Header, "Dlq-Reason", "rejected")
		d = op.lastMsg("DLQ", "dlq.down", resultTimeout)
		wantHeader(t, d.Header, "Dlq-Reason", "exhausted")
		// One call per delivery, two deliveries: the first one's attempt
		// reached the second through the history bucket.
		if got := d.Header.Get("Dlq-Attempts"); got != "2" {
			t.Errorf("Dlq-Attempts = %q, want 2 (one attempt per delivery, kept in KV_DLQ_HISTORY)", got)
		}
	}
	{
		t.Log("step: health events")
		m := op.lastMsg("HEALTH", "health.worker.w1", resultTimeout)
		if !strings.Contains(string(m.Data), `"worker":"w1"`) {
			t.Errorf("health.worker.w1: %s", m.Data)
		}
		op.lastMsg("HEALTH", "health.backend.echoer", resultTimeout)
		r := s.publisher(t, operatorUser, "health")
		if r.code != 0 || !strings.Contains(r.stdout, "w1") || !strings.Contains(r.stdout, "echoer") {
			t.Fatalf("publisher health as operator: exit %d\n%s", r.code, r.stdout)
		}
	}
	{
		t.Log("step: admin service")
		ping := op.request("$SRV.PING.breakwater", "")
		if !strings.Contains(string(ping.Data), `"name":"breakwater"`) {
			t.Errorf("$SRV.PING.breakwater: %s", ping.Data)
		}
		st := op.request("breakwater.w1.status", "")
		if !strings.Contains(string(st.Data), `"worker":"w1"`) {
			t.Errorf("breakwater.w1.status: %s", st.Data)
		}
	}

	// --- What the client may not do, each checked on its outcome.
	dlqBefore, resultsBefore := op.msgs("DLQ"), op.msgs("RESULTS")
	{
		t.Log("step: client refused")
		for _, tc := range []struct{ subject, body string }{
			// The admin plane.
			{"breakwater.all.route.pause", `{"route":"echo"}`},
			{"breakwater.w1.route.pause", `{"route":"echo"}`},
			{"breakwater.all.breaker.trip", `{"backend":"svc"}`},
			{"$SRV.PING.breakwater", ""},
			// Health events, results and replies of others.
			{"health.worker.forged", `{"worker":"forged","status":"running"}`},
			{"health.backend.svc", `{"backend":"svc","state":"unhealthy","breaker":"open"}`},
			{"health.alert.forged", `{"alert":"forged","status":"firing"}`},
			{"results.echo.forged", "forged"},
			{"_INBOX.forged", "forged"},
			{"$KV.RESULT_CACHE.forged", "forged"},
			// Reading the DLQ.
			{"$JS.API.STREAM.INFO.DLQ", ""},
			{"$JS.API.STREAM.MSG.GET.DLQ", `{"seq":1}`},
			{"$JS.API.CONSUMER.CREATE.DLQ.peek", `{"stream_name":"DLQ","config":{"name":"peek","ack_policy":"none"}}`},
			// Changing, purging or deleting streams and the workers' consumer.
			{"$JS.API.STREAM.DELETE.DLQ", ""},
			{"$JS.API.STREAM.DELETE.TASKS", ""},
			{"$JS.API.STREAM.PURGE.RESULTS", ""},
			{"$JS.API.STREAM.PURGE.TASKS", ""},
			{"$JS.API.STREAM.UPDATE.RESULTS", `{"name":"RESULTS","subjects":["results.>"],"max_msgs":1}`},
			{"$JS.API.STREAM.MSG.DELETE.RESULTS", `{"seq":1}`},
			{"$JS.API.CONSUMER.DELETE.TASKS.workers", ""},
			{"$JS.API.STREAM.DELETE.KV_DLQ_HISTORY", ""},
		} {
			cl.refusePublish(tc.subject, []byte(tc.body))
		}
		sub, err := cl.nc.SubscribeSync("dlq.>")
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 5*time.Second, "subscription to dlq.> refused", func() (bool, string) {
			return cl.wasDenied(`Subscription to "dlq.>"`), "not refused"
		})
		_ = sub.Unsubscribe()
		r := s.publisher(t, clientUser, "--timeout", "2s", "dlq", "list")
		if r.code == 0 || strings.Contains(r.stdout, "p-nope") || strings.Contains(r.stdout, "n1") {
			t.Errorf("publisher dlq list as client: exit %d, stdout %q; want a failure showing nothing", r.code, r.stdout)
		}

		// Outcomes: every stream and its messages are there, the
		// workers' consumer too, nothing forged was stored, the route
		// still serves and the breaker is closed.
		if got := op.msgs("DLQ"); got != dlqBefore {
			t.Errorf("DLQ holds %d messages, want %d", got, dlqBefore)
		}
		if got := op.msgs("RESULTS"); got != resultsBefore {
			t.Errorf("RESULTS holds %d messages, want %d", got, resultsBefore)
		}
		info, err := op.streamInfo("RESULTS", "")
		if err != nil || info.Config.MaxMsgs != -1 {
			t.Errorf("RESULTS config changed: %v %+v", err, info)
		}
		if _, err := op.consumerInfo(); err != nil {
			t.Errorf("consumer TASKS/workers: %v", err)
		}
		op.noMsg("HEALTH", "health.worker.forged")
		op.noMsg("HEALTH", "health.alert.forged")
		op.noMsg("RESULTS", "results.echo.forged")
		for _, typ := range []string{"echo", "guarded"} {
			r := s.publisher(t, clientUser, "publish", typ, "still", "--wait")
			if r.code != 0 || strings.TrimSpace(r.stdout) != "still" {
				t.Errorf("route %s after the refusals: exit %d, stdout %q", typ, r.code, r.stdout)
			}
		}
		m := op.lastMsg("HEALTH", "health.backend.svc", resultTimeout)
		if !strings.Contains(string(m.Data), `"breaker":"closed"`) {
			t.Errorf("health.backend.svc after the refused trip: %s", m.Data)
		}
	}

	// --- The operator's rights.
	{
		t.Log("step: operator pauses and resumes a route")
		if r := op.request("breakwater.all.route.pause", `{"route":"echo"}`); !strings.Contains(string(r.Data), `"ok":true`) {
			t.Fatalf("pause: %s", r.Data)
		}
		if r := s.publisher(t, clientUser, "publish", "echo", "held", "--id", "h1"); r.code != 0 {
			t.Fatalf("publish: exit %d", r.code)
		}
		testkit.Eventually(t, 10*time.Second, "the task held by the paused route", func() (bool, string) {
			ci, err := op.consumerInfo()
			if err != nil {
				return false, err.Error()
			}
			return ci.NumPending == 0 && ci.NumAckPending == 1, fmt.Sprintf("pending %d, ack pending %d", ci.NumPending, ci.NumAckPending)
		})
		op.noMsg("RESULTS", "results.echo.h1")
		if r := op.request("breakwater.all.route.resume", `{"route":"echo"}`); !strings.Contains(string(r.Data), `"ok":true`) {
			t.Fatalf("resume: %s", r.Data)
		}
		op.lastMsg("RESULTS", "results.echo.h1", resultTimeout)
		if r := op.request("breakwater.w1.breaker.trip", `{"backend":"svc"}`); !strings.Contains(string(r.Data), `"ok":true`) {
			t.Fatalf("trip: %s", r.Data)
		}
		if r := op.request("breakwater.w1.breaker.reset", `{"backend":"svc"}`); !strings.Contains(string(r.Data), `"ok":true`) {
			t.Fatalf("reset: %s", r.Data)
		}
	}
	{
		t.Log("step: operator lists, shows, replays and purges the DLQ")
		r := s.publisher(t, operatorUser, "dlq", "list")
		if r.code != 0 || !strings.Contains(r.stdout, "n1") || !strings.Contains(r.stdout, "d1") {
			t.Fatalf("dlq list: exit %d\n%s", r.code, r.stdout)
		}
		seq := op.lastMsg("DLQ", "dlq.nope", resultTimeout).Sequence
		r = s.publisher(t, operatorUser, "dlq", "show", strconv.FormatUint(seq, 10))
		if r.code != 0 || !strings.Contains(r.stdout, "p-nope") {
			t.Fatalf("dlq show %d: exit %d\n%s", seq, r.code, r.stdout)
		}
		r = s.publisher(t, operatorUser, "dlq", "replay", "--type", "nope")
		if r.code != 0 || !strings.HasPrefix(r.stderr, "replayed 1,") {
			t.Fatalf("dlq replay: exit %d, stderr %q", r.code, r.stderr)
		}
		// The replayed task fails again: a new entry, replayed once.
		testkit.Eventually(t, resultTimeout, "the replayed task dead-lettered again", func() (bool, string) {
			m := op.lastMsg("DLQ", "dlq.nope", resultTimeout)
			return m.Header.Get("Dlq-Replays") == "1", fmt.Sprintf("Dlq-Replays %q", m.Header.Get("Dlq-Replays"))
		})
		r = s.publisher(t, operatorUser, "dlq", "purge", "--type", "down")
		if r.code != 0 || !strings.HasPrefix(r.stderr, "purged 1,") {
			t.Fatalf("dlq purge: exit %d, stderr %q", r.code, r.stderr)
		}
		op.noMsg("DLQ", "dlq.down")
	}

	// --- A crash loop: the next workers move the task to the DLQ from the
	// server's advisory, with the worker user only.
	{
		t.Log("step: crash-loop advisory")
		if r := s.publisher(t, clientUser, "publish", "boom", "p-boom", "--id", "b1"); r.code != 0 {
			t.Fatalf("publish boom: exit %d", r.code)
		}
		if code := w1.Wait(30 * time.Second); code != 3 {
			t.Fatalf("w1 exit code %d, want 3 (killed by builtin:crash)", code)
		}
		// Two workers start at once, well within the ack wait: the second
		// delivery kills one, and the other is already listening for the
		// server's advisory (core NATS: a worker starting after it would
		// miss it).
		w2 := startWorkerNoWait(t, s.NATSProcess, workerArgs("w2")...)
		w3 := startWorkerNoWait(t, s.NATSProcess, workerArgs("w3")...)
		testkit.Eventually(t, 30*time.Second, "one of w2 and w3 killed by the second delivery", func() (bool, string) {
			return w2.Exited() != w3.Exited(), fmt.Sprintf("w2 exited %v, w3 exited %v", w2.Exited(), w3.Exited())
		})
		for _, w := range []*worker{w2, w3} {
			if w.Exited() {
				if code := w.Wait(time.Second); code != 3 {
					t.Fatalf("exit code %d, want 3", code)
				}
			}
		}
		d := op.lastMsg("DLQ", "dlq.boom", resultTimeout)
		wantHeader(t, d.Header, "Dlq-Reason", "max_deliveries")
		testkit.Eventually(t, 10*time.Second, "TASKS empty", func() (bool, string) {
			n := op.msgs("TASKS")
			return n == 0, fmt.Sprintf("%d messages", n)
		})
	}

	// What the client overheard on _INBOX.>: its own traffic only.
	if err := cl.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	secrets := []string{"p-nope", "p-down", "p-boom"}
	for _, p := range slices.Clone(secrets) {
		secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(p)))
	}
	heard := 0
	for len(overheard) > 0 {
		m := <-overheard
		heard++
		if strings.HasPrefix(m.Subject, "tasks.") || strings.HasPrefix(m.Subject, "dlq.") {
			t.Errorf("the client overheard a delivery of %s on its _INBOX.> subscription", m.Subject)
		}
		for _, p := range secrets {
			if strings.Contains(string(m.Data), p) {
				t.Errorf("the client overheard %q on %s: %.200s", p, m.Subject, m.Data)
			}
		}
	}
	if heard == 0 {
		t.Error("the client heard nothing on _INBOX.>, not even its own replies: the check proves nothing")
	}

	// Everything above ran with the worker's user alone.
	if v := s.violations(workerUser); len(v) > 0 {
		t.Errorf("the server refused the worker %d times:\n%s", len(v), strings.Join(v, "\n"))
	}
	// The same log does show the client's refusals: the check above can fail.
	if v := s.violations(clientUser); len(v) == 0 {
		t.Errorf("the server log shows no refusal of the client; the worker check proves nothing")
	}

	// --- A task cannot use the worker's rights for what the worker itself
	// may not do: the worker has no right to delete or purge a stream or
	// to reach the admin plane, whatever Task-Reply-To says.
	{
		t.Log("step: Task-Reply-To cannot borrow rights the worker lacks")
		for i, reply := range []string{"$JS.API.STREAM.DELETE.DLQ", "$JS.API.STREAM.PURGE.RESULTS", "breakwater.all.route.pause"} {
			cl.publishTask("echo", "deputy-"+strconv.Itoa(i), []byte(`{"route":"echo"}`), "Task-Reply-To", reply)
		}
		testkit.Eventually(t, resultTimeout, "the three tasks settled", func() (bool, string) {
			ci, err := op.consumerInfo()
			if err != nil {
				return false, err.Error()
			}
			return ci.NumPending == 0 && ci.NumAckPending == 0, fmt.Sprintf("pending %d, ack pending %d", ci.NumPending, ci.NumAckPending)
		})
		if got := op.msgs("DLQ"); got < 1 {
			t.Errorf("DLQ holds %d messages", got)
		}
		if got := op.msgs("RESULTS"); got < resultsBefore {
			t.Errorf("RESULTS holds %d messages, want at least %d", got, resultsBefore)
		}
		if r := s.publisher(t, clientUser, "publish", "echo", "after", "--wait"); r.code != 0 {
			t.Errorf("echo after the deputies: exit %d", r.code)
		}
	}
}

// TestAuthDeployConfigs checks that every server config under deploy/nats
// includes auth.conf and so defines exactly the three users, each with
// permissions, their passwords from the environment (TestMain sets them).
func TestAuthDeployConfigs(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob(deployPath("nats", "*.conf"))
	cluster, _ := filepath.Glob(deployPath("nats", "cluster", "*.conf"))
	files = append(files, cluster...)
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "auth.conf" {
			continue
		}
		n++
		rel, _ := filepath.Rel(deployPath(), f)
		o, err := server.ProcessConfigFile(f)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		var users []string
		for _, u := range o.Users {
			users = append(users, u.Username)
			if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil {
				t.Errorf("%s: user %s has no publish or subscribe permissions", rel, u.Username)
			}
			if u.Password != os.Getenv(authEnv[u.Username]) {
				t.Errorf("%s: user %s's password is not $%s", rel, u.Username, authEnv[u.Username])
			}
		}
		slices.Sort(users)
		if want := []string{clientUser, operatorUser, workerUser}; !slices.Equal(users, want) {
			t.Errorf("%s: users %v, want %v", rel, users, want)
		}
		if o.Cluster.Port != 0 && (o.Cluster.Username == "" || o.Cluster.Password != os.Getenv("BW_ROUTE_PASSWORD")) {
			t.Errorf("%s: cluster routes without the route user", rel)
		}
		for _, r := range o.Routes {
			if p, _ := r.User.Password(); r.User == nil || r.User.Username() != o.Cluster.Username || p != o.Cluster.Password {
				t.Errorf("%s: route %s does not carry the route user", rel, r.Redacted())
			}
		}
	}
	if n < 4 {
		t.Fatalf("found %d server configs, want single.conf and three cluster nodes", n)
	}
}

// TestAuthPlannedNames checks the rights auth.conf grants for names other
// parts of Breakwater are adding (the ADVISORIES stream and its durable
// consumer crash-loop, the DLQ_PAYLOADS object store, schedules in TASKS)
// with the nats.go calls such code makes, against the real server: the
// worker creates and writes, the operator reads and deletes, the client
// publishes a schedule, and the server refuses none of it.
func TestAuthPlannedNames(t *testing.T) {
	t.Parallel()
	s := startNATSAuth(t)
	w := s.connectAs(t, workerUser)
	op := s.connectAs(t, operatorUser)
	cl := s.connectAs(t, clientUser)
	ctx := ctxTimeout(t, 30*time.Second)

	// TASKS as the worker makes it, with message schedules allowed, and
	// the workers' consumer.
	cfg := bus.Topology{}.StreamConfigs()[0]
	cfg.Subjects = []string{"tasks.>", "schedules.>"}
	cfg.AllowMsgSchedules = true
	if _, err := w.js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("worker creates TASKS: %v", err)
	}
	if _, err := bus.EnsureConsumer(ctx, w.js, bus.Topology{}, bus.ConsumerOptions{MaxDeliver: 1, AckWait: time.Second}); err != nil {
		t.Fatalf("worker creates the workers consumer: %v", err)
	}

	// ADVISORIES: the server's max-deliveries advisory kept in a stream,
	// read by the durable consumer crash-loop.
	const advisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.workers"
	if _, err := w.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "ADVISORIES", Subjects: []string{advisory},
		Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour}); err != nil {
		t.Fatalf("worker creates ADVISORIES: %v", err)
	}
	adv, err := w.js.CreateOrUpdateConsumer(ctx, "ADVISORIES", jetstream.ConsumerConfig{Durable: "crash-loop",
		AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: advisory})
	if err != nil {
		t.Fatalf("worker creates the crash-loop consumer: %v", err)
	}
	// A task delivered once and never acknowledged makes the server
	// publish the advisory.
	cl.publishTask("echo", "a1", []byte("x"))
	cons, err := w.js.Consumer(ctx, "TASKS", bus.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the advisory read through crash-loop", func() (bool, string) {
		b, err := adv.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return false, err.Error()
		}
		m, ok := <-b.Messages()
		if !ok {
			return false, fmt.Sprint(b.Error())
		}
		if err := m.DoubleAck(ctx); err != nil {
			return false, err.Error()
		}
		return true, ""
	})

	// DLQ_PAYLOADS: the worker writes, the operator reads and deletes.
	obs, err := w.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "DLQ_PAYLOADS", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("worker creates DLQ_PAYLOADS: %v", err)
	}
	payload := []byte(strings.Repeat("payload ", 40000)) // several chunks
	if _, err := obs.PutBytes(ctx, "dlq-7", payload); err != nil {
		t.Fatalf("worker writes an object: %v", err)
	}
	if _, err := obs.PutBytes(ctx, "dlq-7", payload[:10]); err != nil {
		t.Fatalf("worker replaces an object: %v", err)
	}
	if _, err := obs.PutBytes(ctx, "dlq-7", payload); err != nil {
		t.Fatal(err)
	}
	ops, err := op.js.ObjectStore(ctx, "DLQ_PAYLOADS")
	if err != nil {
		t.Fatalf("operator opens DLQ_PAYLOADS: %v", err)
	}
	got, err := ops.GetBytes(ctx, "dlq-7")
	if err != nil || len(got) != len(payload) {
		t.Fatalf("operator reads the object: %d bytes, %v", len(got), err)
	}
	if err := ops.Delete(ctx, "dlq-7"); err != nil {
		t.Fatalf("operator deletes the object: %v", err)
	}
	// Refused requests get no answer: the call waits out its context.
	if _, err := cl.js.ObjectStore(ctxTimeout(t, time.Second), "DLQ_PAYLOADS"); err == nil {
		t.Error("the client opened DLQ_PAYLOADS")
	}

	// Schedules: the client publishes one, the operator reads and removes
	// it by sequence.
	m := nats.NewMsg("schedules.every.tick")
	m.Header.Set("Nats-Schedule", "@every 1h")
	m.Header.Set("Nats-Schedule-Target", "tasks.echo")
	ack, err := cl.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("client publishes a schedule: %v", err)
	}
	tasks, err := op.js.Stream(ctx, "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	if sm, err := tasks.GetLastMsgForSubject(ctx, "schedules.every.tick"); err != nil || sm.Sequence != ack.Sequence {
		t.Fatalf("operator reads the schedule: %v", err)
	}
	if err := tasks.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatalf("operator removes the schedule: %v", err)
	}

	for _, user := range []string{workerUser, operatorUser} {
		if v := s.violations(user); len(v) > 0 {
			t.Errorf("the server refused %s %d times:\n%s", user, len(v), strings.Join(v, "\n"))
		}
	}
	if v := s.violations(clientUser); len(v) == 0 {
		t.Error("the client opened the object store unrefused")
	}
}

// TestAuthKubernetes checks that the Kubernetes files use the users: the
// NATS values include auth.conf and take the three passwords from a Secret,
// and the worker connects as breakwater-worker with its password from a
// Secret, not on its command line.
func TestAuthKubernetes(t *testing.T) {
	t.Parallel()
	var values struct {
		Config struct {
			Merge map[string]any `yaml:"merge"`
		} `yaml:"config"`
		Container struct {
			Env map[string]struct {
				ValueFrom struct {
					SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
				} `yaml:"valueFrom"`
			} `yaml:"env"`
		} `yaml:"container"`
	}
	docs := decodeAll[map[string]any](t, deployPath("kubernetes", "nats-values.yaml"))
	b, _ := yaml.Marshal(docs[0])
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	if got := values.Config.Merge["$include"]; got != "auth.conf" {
		t.Errorf("nats-values.yaml: config.merge.$include = %v, want auth.conf", got)
	}
	for _, name := range authEnv {
		ref := values.Container.Env[name].ValueFrom.SecretKeyRef
		if ref.Name == "" || ref.Key == "" {
			t.Errorf("nats-values.yaml: container.env.%s is not taken from a Secret", name)
		}
	}

	type envVar struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	}
	var dep struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Args []string `yaml:"args"`
						Env  []envVar `yaml:"env"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	for _, d := range decodeAll[map[string]any](t, deployPath("kubernetes", "worker-deployment.yaml")) {
		b, _ := yaml.Marshal(d)
		if err := yaml.Unmarshal(b, &dep); err == nil && dep.Kind == "Deployment" {
			break
		}
	}
	if dep.Kind != "Deployment" || len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("worker-deployment.yaml: no Deployment with one container")
	}
	ctr := dep.Spec.Template.Spec.Containers[0]
	env := map[string]envVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	if env["NATS_USER"].Value != workerUser {
		t.Errorf("worker env NATS_USER = %q, want %s", env["NATS_USER"].Value, workerUser)
	}
	if ref := env["NATS_PASSWORD"].ValueFrom.SecretKeyRef; ref.Name == "" || ref.Key == "" {
		t.Error("worker env NATS_PASSWORD is not taken from a Secret")
	}
	for _, a := range ctr.Args {
		if strings.HasPrefix(a, "--password") || strings.HasPrefix(a, "--token") {
			t.Errorf("worker args carry a secret: %s", a)
		}
	}
}

// TestAuthClusterRoutes starts two nodes from the repository's cluster
// configs (ports and stores moved to free ones): they form their cluster
// over routes carrying the route user, and a server that does not know the
// route password is refused as a route.
func TestAuthClusterRoutes(t *testing.T) {
	t.Parallel()
	const routePassword = "bwroute0test"
	clusterPort := []int{testkit.FreePort(t), testkit.FreePort(t)}
	routes := fmt.Sprintf("[nats-route://breakwater-route:%s@127.0.0.1:%d, nats-route://breakwater-route:%s@127.0.0.1:%d]",
		routePassword, clusterPort[0], routePassword, clusterPort[1])
	env := []string{"BW_ROUTE_PASSWORD=" + routePassword, "BW_ROUTES=" + routes}
	for user, name := range authEnv {
		env = append(env, name+"=bw"+user)
	}
	node := func(file string, clusterPort int, routes string) *testkit.NATSProcess {
		src, err := os.ReadFile(deployPath("nats", "cluster", file))
		if err != nil {
			t.Fatal(err)
		}
		return testkit.StartNATS(t, testkit.NATSConfig{Bin: bin.natsServer, Env: env, Conf: func(s *testkit.NATSProcess) string {
			rel, err := filepath.Rel(s.Dir, deployPath("nats", "auth.conf"))
			if err != nil {
				t.Fatal(err)
			}
			conf := string(src)
			for _, r := range []struct{ re, with string }{
				{`(?m)^listen: .*$`, fmt.Sprintf("listen: 127.0.0.1:%d", s.Port)},
				{`(?m)^http: .*$`, fmt.Sprintf("http: 127.0.0.1:%d", s.HTTPPort)},
				{`(?m)^  store_dir: .*$`, fmt.Sprintf("  store_dir: %q", filepath.Join(s.Dir, "store"))},
				{`(?m)^  listen: .*$`, fmt.Sprintf("  listen: 127.0.0.1:%d", clusterPort)},
				{`(?m)^include "\.\./auth\.conf"$`, fmt.Sprintf("include %q", rel)},
			} {
				re := regexp.MustCompile(r.re)
				if !re.MatchString(conf) {
					t.Fatalf("%s has no line matching %s", file, r.re)
				}
				conf = re.ReplaceAllString(conf, r.with)
			}
			if routes != "" {
				conf = strings.Replace(conf, "routes: $BW_ROUTES", "routes: "+routes, 1)
			}
			return conf
		}})
	}
	routez := func(s *testkit.NATSProcess) (n int, names []string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/routez", s.HTTPPort))
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var rz struct {
			Routes []struct {
				RemoteName string `json:"remote_name"`
			} `json:"routes"`
		}
		if json.NewDecoder(resp.Body).Decode(&rz) != nil {
			return 0, nil
		}
		for _, r := range rz.Routes {
			names = append(names, r.RemoteName)
		}
		return len(rz.Routes), names
	}

	n1 := node("n1.conf", clusterPort[0], "")
	n2 := node("n2.conf", clusterPort[1], "")
	testkit.Eventually(t, testkit.StartTimeout, "n1 and n2 routed", func() (bool, string) {
		_, a := routez(n1)
		_, b := routez(n2)
		return slices.Contains(a, "n2") && slices.Contains(b, "n1"), fmt.Sprintf("n1 sees %v, n2 sees %v", a, b)
	})

	// n3 comes with the routes but a wrong password.
	wrong := strings.ReplaceAll(routes, routePassword, "bwguessed")
	intruder := node("n3.conf", testkit.FreePort(t), wrong)
	testkit.Eventually(t, testkit.StartTimeout, "n3's routes refused", func() (bool, string) {
		log := intruder.Proc.Stderr()
		return strings.Count(log, "Route Error 'Authorization Violation'") >= 2, "no refusal in n3's log yet"
	})
	for _, s := range []*testkit.NATSProcess{n1, n2} {
		if _, names := routez(s); slices.Contains(names, "n3") {
			t.Errorf("n3 joined with a wrong route password: routes %v", names)
		}
	}
}
