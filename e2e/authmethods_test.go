package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus/bustest"
	"github.com/breakwater/breakwater/internal/testkit"
)

// startNATSConf starts a nats-server like startNATS with extra
// configuration (authorization, operator, tls) appended.
func startNATSConf(t testing.TB, extra string) *testkit.NATSProcess {
	t.Helper()
	return startNATSWith(t, func(string) string { return extra }, nil)
}

// startWorkerEnv starts a worker with env added to its environment and no
// --nats-url of its own (args or env name the server).
func startWorkerEnv(t testing.TB, env []string, args ...string) *worker {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	all := append([]string{"--http", addr, "--log-format", "text", "--log-level", "debug"}, args...)
	return &worker{Process: testkit.StartProcess(t, "worker", bin.worker, env, all...), t: t, httpAddr: addr}
}

// noNATSEnv blanks the nats CLI's variables that the test process might
// have, so that each case sees only its own.
var noNATSEnv = []string{"NATS_URL=", "NATS_USER=", "NATS_PASSWORD=", "NATS_TOKEN=", "NATS_CREDS=", "NATS_NKEY=",
	"NATS_CA=", "NATS_CERT=", "NATS_KEY="}

// TestAuthMethodsBothCommands runs a worker and the publisher against a
// nats-server that requires each auth method in turn: the worker takes its
// credentials from the nats CLI's environment variables, the publisher once
// from flags and once from the variables, and a task goes through.
func TestAuthMethodsBothCommands(t *testing.T) {
	t.Parallel()
	nk := bustest.NewNKeyUser(t)
	op := bustest.NewOperator(t)
	certs := bustest.NewTLS(t)
	tests := []struct {
		name  string
		conf  string
		env   []string // the worker's and the second publisher's
		flags []string // the first publisher's
	}{
		{
			name:  "user and password",
			conf:  `authorization { users = [ {user: alice, password: "e2e-pw-Ux73"} ] }`,
			env:   []string{"NATS_USER=alice", "NATS_PASSWORD=e2e-pw-Ux73"},
			flags: []string{"--user", "alice", "--password", "e2e-pw-Ux73"},
		},
		{
			name:  "token",
			conf:  `authorization { token: "e2e-tok-Wq58" }`,
			env:   []string{"NATS_TOKEN=e2e-tok-Wq58"},
			flags: []string{"--token", "e2e-tok-Wq58"},
		},
		{
			name:  "nkey",
			conf:  fmt.Sprintf(`authorization { users = [ {nkey: %s} ] }`, nk.Public),
			env:   []string{"NATS_NKEY=" + nk.SeedFile},
			flags: []string{"--nkey", nk.SeedFile},
		},
		{
			name: "creds",
			conf: fmt.Sprintf("operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
				op.JWT, op.SystemPub, op.SystemPub, op.SystemJWT, op.AccountPub, op.AccountJWT),
			env:   []string{"NATS_CREDS=" + op.CredsFile},
			flags: []string{"--creds", op.NewUserCreds(t, "publisher")},
		},
		{
			name: "TLS client certificate",
			conf: fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n",
				certs.ServerCert, certs.ServerKey, certs.CA),
			env:   []string{"NATS_CA=" + certs.CA, "NATS_CERT=" + certs.ClientCert, "NATS_KEY=" + certs.ClientKey},
			flags: []string{"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startNATSConf(t, tt.conf)
			env := append(append([]string{}, noNATSEnv...), tt.env...)
			w := startWorkerEnv(t, append(env, "NATS_URL="+s.URL()))
			w.waitReady()

			r := runPublisher(t, noNATSEnv, append([]string{"publish", "echo", "by-flags", "--wait", "--timeout", "20s",
				"--nats-url", s.URL()}, tt.flags...)...)
			if r.code != 0 || strings.TrimSpace(r.stdout) != "by-flags" {
				t.Errorf("publisher with flags: exit %d, stdout %q, stderr %q; want the echo", r.code, r.stdout, r.stderr)
			}
			r = runPublisher(t, env, "publish", "echo", "by-env", "--wait", "--timeout", "20s", "--nats-url", s.URL())
			if r.code != 0 || strings.TrimSpace(r.stdout) != "by-env" {
				t.Errorf("publisher with env: exit %d, stdout %q, stderr %q; want the echo", r.code, r.stdout, r.stderr)
			}
			// Without credentials the same server refuses both.
			r = runPublisher(t, noNATSEnv, "publish", "echo", "none", "--timeout", "20s", "--nats-url", s.URL())
			if r.code != 1 {
				t.Errorf("publisher without credentials: exit %d, want 1", r.code)
			}
			w.Signal(syscall.SIGTERM)
			if code := w.Wait(testkit.StopTimeout); code != 0 {
				t.Errorf("worker exit code after SIGTERM = %d, want 0", code)
			}
		})
	}
}

// TestRefusedCredentials: a wrong password, from the environment or a flag
// or the URL, fails both commands with one clear line, and no output of
// either holds a secret or the user (the publisher does not retry; the
// worker logs why and gives up once the server refused it twice).
func TestRefusedCredentials(t *testing.T) {
	t.Parallel()
	s := startNATSConf(t, `authorization { users = [ {user: alice, password: "right-pw-Hc20"} ] }`)
	host := strings.TrimPrefix(s.URL(), "nats://")
	const secret = "wrong-pw-Bd66"
	tests := []struct {
		name string
		env  []string
		args []string
	}{
		{"NATS_PASSWORD", []string{"NATS_USER=alice", "NATS_PASSWORD=" + secret}, []string{"--nats-url", s.URL()}},
		{"--password", nil, []string{"--nats-url", s.URL(), "--user", "alice", "--password", secret}},
		{"--token", nil, []string{"--nats-url", s.URL(), "--token", secret}},
		{"URL user info", nil, []string{"--nats-url", "nats://alice:" + secret + "@" + host}},
		{"URL token", nil, []string{"--nats-url", "nats://" + secret + "@" + host}},
		{"NATS_URL user info in a list", []string{"NATS_URL=nats://alice:" + secret + "@127.0.0.1:1,nats://alice:" + secret + "@" + host}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := append(append([]string{}, noNATSEnv...), tt.env...)
			r := runPublisher(t, env, append([]string{"publish", "echo", "x", "--timeout", "30s"}, tt.args...)...)
			if r.code != 1 || strings.Count(r.stderr, "\n") != 1 ||
				!strings.Contains(r.stderr, "publisher: connect to nats://127.0.0.1:") ||
				!strings.Contains(r.stderr, "Authorization Violation") {
				t.Errorf("publisher: exit %d, stderr %q; want exit 1 and one line with the server and the reason", r.code, r.stderr)
			}
			noSecretIn(t, "publisher stderr", r.stderr+r.stdout, secret)

			w := startWorkerEnv(t, env, tt.args...)
			code := w.Wait(30 * time.Second)
			stderr := w.Stderr()
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if code != 1 || !strings.HasPrefix(last, "worker: connect to nats://127.0.0.1:") ||
				!strings.Contains(last, "Authorization Violation") {
				t.Errorf("worker: exit %d, last line %q; want exit 1 and the reason", code, last)
			}
			if !strings.Contains(stderr, "nats connect failed; retrying") {
				t.Errorf("worker did not log why it retried:\n%s", stderr)
			}
			noSecretIn(t, "worker stderr", stderr+w.Stdout(), secret)
		})
	}
}

func noSecretIn(t *testing.T, where, text, secret string) {
	t.Helper()
	for _, s := range []string{secret, "alice:", "alice@"} {
		if strings.Contains(text, s) {
			t.Errorf("%s shows %q:\n%s", where, s, text)
		}
	}
}

// TestConnectionLogsWithoutUserInfo: a worker given its credentials in the
// URL, with a dead server listed first, names the server without user info
// when it starts, loses and regains the connection.
func TestConnectionLogsWithoutUserInfo(t *testing.T) {
	t.Parallel()
	const secret = "url-pw-Kp47"
	s := startNATSConf(t, `authorization { users = [ {user: alice, password: "`+secret+`"} ] }`)
	host := strings.TrimPrefix(s.URL(), "nats://")
	w := startWorkerEnv(t, noNATSEnv, "--nats-url", "nats://alice:"+secret+"@127.0.0.1:1,nats://alice:"+secret+"@"+host)
	w.waitReady()
	if !strings.Contains(w.Stderr(), "nats="+s.URL()) {
		t.Errorf("worker started line does not name %s:\n%s", s.URL(), w.Stderr())
	}

	s.Stop()
	testkit.Eventually(t, testkit.StartTimeout, "the disconnect line", func() (bool, string) {
		return strings.Contains(w.Stderr(), "nats disconnected"), ""
	})
	s.Start()
	testkit.Eventually(t, testkit.StartTimeout, "the reconnect line", func() (bool, string) {
		return strings.Contains(w.Stderr(), "nats reconnected"), ""
	})
	for _, line := range strings.Split(w.Stderr(), "\n") {
		if strings.Contains(line, "nats disconnected") || strings.Contains(line, "nats reconnected") {
			if !strings.Contains(line, "url="+s.URL()) {
				t.Errorf("line %q: want url=%s", line, s.URL())
			}
		}
	}
	r := runPublisher(t, noNATSEnv, "publish", "echo", "after", "--wait", "--timeout", "20s",
		"--nats-url", "nats://alice:"+secret+"@"+host)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "after" {
		t.Errorf("publish after the reconnect: exit %d, stdout %q", r.code, r.stdout)
	}
	w.Signal(syscall.SIGTERM)
	w.Wait(testkit.StopTimeout)
	noSecretIn(t, "worker stderr", w.Stderr()+w.Stdout(), secret)
}

// TestWrongURLScheme: both commands refuse an http:// --nats-url at once,
// exit 2, in one line.
func TestWrongURLScheme(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  func(t testing.TB, env []string, args ...string) result
		env  []string
		args []string
	}{
		{"publisher flag", runPublisher, noNATSEnv, []string{"publish", "echo", "x", "--nats-url", "http://127.0.0.1:4222"}},
		{"publisher NATS_URL", runPublisher, append(append([]string{}, noNATSEnv...), "NATS_URL=http://127.0.0.1:4222"), []string{"results"}},
		{"worker flag", runWorker, noNATSEnv, []string{"--nats-url", "http://127.0.0.1:4222"}},
		{"worker NATS_URL", runWorker, append(append([]string{}, noNATSEnv...), "NATS_URL=http://127.0.0.1:4222"), nil},
		{"worker embedded", runWorker, noNATSEnv, []string{"--embedded", t.TempDir(), "--nats-url", "http://127.0.0.1:4222"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := tt.run(t, tt.env, tt.args...)
			if r.code != 2 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, `scheme "http" is not one of nats, tls, ws, wss`) {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line naming the scheme", r.code, r.stderr)
			}
		})
	}
}

// TestSecondEmbeddedWorker: a second `worker --embedded` on the first one's
// port or store fails at once with the reason, never starts a server on the
// store (no nats-server line), and leaves the first one serving. The store
// lock dies with its process: after a kill -9 the store opens again.
func TestSecondEmbeddedWorker(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	port := testkit.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	first := startWorkerEnv(t, noNATSEnv, "--embedded", dir, "--nats-url", addr) // space-separated DIR
	first.waitReady()

	otherDir := filepath.Join(t.TempDir(), "other")
	tests := []struct {
		name string
		args []string
		want []string // in the last stderr line
	}{
		{"same port, same store", []string{"--embedded", dir, "--nats-url", addr},
			[]string{"address already in use", addr}},
		{"same port, other store", []string{"--embedded=" + otherDir, "--nats-url", addr},
			[]string{"address already in use", addr}},
		{"other port, same store", []string{"--embedded", dir, "--nats-url", "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t))},
			[]string{"store directory in use by another embedded server", "pid " + strconv.Itoa(first.Cmd.Process.Pid), dir}},
	}
	for _, tt := range tests {
		// One after the other: each must find the first one alone.
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			w := startWorkerEnv(t, noNATSEnv, tt.args...)
			code := w.Wait(30 * time.Second)
			took := time.Since(start)
			stderr := strings.TrimSpace(w.Stderr())
			lines := strings.Split(stderr, "\n")
			last := lines[len(lines)-1]
			if code != 1 || !strings.HasPrefix(last, "worker: ") {
				t.Errorf("exit %d, last line %q; want exit 1 and a worker: line", code, last)
			}
			for _, want := range tt.want {
				if !strings.Contains(last, want) {
					t.Errorf("last line %q does not contain %q", last, want)
				}
			}
			// The old failure waited out the 10 s start timeout and said
			// only "not ready", after opening the store.
			if strings.Contains(stderr, "not ready") || took > 8*time.Second {
				t.Errorf("failed after %s with %q; want at once with the reason", took, last)
			}
			if strings.Contains(stderr, "component=nats-server") {
				t.Errorf("a nats server started (and opened a store):\n%s", stderr)
			}
		})
	}

	if !first.ready() {
		t.Fatal("first worker not ready after the refused ones")
	}
	r := runPublisher(t, noNATSEnv, "publish", "echo", "still-here", "--wait", "--timeout", "20s", "--nats-url", addr)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "still-here" {
		t.Errorf("first worker after the refused ones: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if s := first.Stderr(); strings.Contains(s, "outdated") || strings.Contains(s, "rebuild") {
		t.Errorf("first worker's store was disturbed:\n%s", s)
	}

	first.Kill()
	again := startWorkerEnv(t, noNATSEnv, "--embedded", dir, "--nats-url", addr)
	again.waitReady()
	again.Signal(syscall.SIGTERM)
	if code := again.Wait(testkit.StopTimeout); code != 0 {
		t.Errorf("worker on the store after kill -9: exit %d, want 0", code)
	}
}
