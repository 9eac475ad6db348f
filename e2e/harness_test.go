package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/internal/testkit"
)

// bin holds the paths of the binaries TestMain builds once for the package.
var bin struct {
	worker, publisher, natsServer string
}

// modRoot is the directory of the module's go.mod.
var modRoot string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "breakwater-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	setDeployEnv()
	return m.Run()
}

// setDeployEnv gives the secrets the configs under deploy/nats read from
// the environment (the users' passwords, the cluster's route password and
// route list) test values, unless they are set, so that the tests can
// parse those configs. Servers the tests start get their own passwords.
func setDeployEnv() {
	const routePassword = "bwroutetest"
	routes := make([]string, 0, 3)
	for _, port := range []int{6222, 6223, 6224} {
		routes = append(routes, fmt.Sprintf("nats-route://breakwater-route:%s@127.0.0.1:%d", routePassword, port))
	}
	for k, v := range map[string]string{
		"BW_WORKER_PASSWORD":   "bwworkertest",
		"BW_CLIENT_PASSWORD":   "bwclienttest",
		"BW_OPERATOR_PASSWORD": "bwoperatortest",
		"BW_ROUTE_PASSWORD":    routePassword,
		"BW_ROUTES":            "[" + strings.Join(routes, ", ") + "]",
	} {
		if _, ok := os.LookupEnv(k); !ok {
			_ = os.Setenv(k, v)
		}
	}
}

// build compiles the worker, the publisher and nats-server (required by
// go.mod) into dir, without -race: the binaries are under test, not the
// test process, and a normal build is much faster.
func build(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("go env GOMOD: not in a module")
	}
	modRoot = filepath.Dir(gomod)

	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"./cmd/worker", "./cmd/publisher", "github.com/nats-io/nats-server/v2")
	cmd.Dir = modRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	bin.worker = filepath.Join(dir, "worker")
	bin.publisher = filepath.Join(dir, "publisher")
	bin.natsServer = filepath.Join(dir, "nats-server")
	for _, p := range []string{bin.worker, bin.publisher, bin.natsServer} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("go build did not produce %s: %w", p, err)
		}
	}
	return nil
}

// startNATS starts a nats-server process with JetStream on a file store
// and sync_interval: always (testkit.StartNATS with the built binary).
func startNATS(t testing.TB) *testkit.NATSProcess {
	t.Helper()
	return testkit.StartNATS(t, testkit.NATSConfig{Bin: bin.natsServer})
}

// startNATSWith starts a nats-server like startNATS whose config also has
// extra (for example an include of a file under deploy/), with env added to
// the server process's environment. Paths in extra are relative to dir,
// the directory of the config file.
func startNATSWith(t testing.TB, extra func(dir string) string, env []string) *testkit.NATSProcess {
	t.Helper()
	return testkit.StartNATS(t, testkit.NATSConfig{Bin: bin.natsServer, Extra: extra, Env: env})
}

// worker is a running worker process.
type worker struct {
	*testkit.Process
	t        testing.TB
	httpAddr string
}

// startWorker starts a worker connected to s (nil: args give the URL) with
// extra args, and waits until /readyz answers 200.
func startWorker(t testing.TB, s *testkit.NATSProcess, args ...string) *worker {
	t.Helper()
	w := startWorkerNoWait(t, s, args...)
	w.waitReady()
	return w
}

// startWorkerNoWait starts a worker without waiting for readiness.
func startWorkerNoWait(t testing.TB, s *testkit.NATSProcess, args ...string) *worker {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	all := []string{"--http", addr, "--log-format", "text", "--log-level", "debug"}
	if s != nil {
		all = append(all, "--nats-url", s.URL())
	}
	all = append(all, args...)
	return &worker{Process: testkit.StartProcess(t, "worker", bin.worker, nil, all...), t: t, httpAddr: addr}
}

func (w *worker) waitReady() {
	w.t.Helper()
	testkit.WaitHTTP(w.t, w.Process, "http://"+w.httpAddr+"/readyz", "worker readyz")
}

// ready reports whether /readyz answers 200 now.
func (w *worker) ready() bool {
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + w.httpAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// result is the outcome of a finished command.
type result struct {
	stdout, stderr string
	code           int
}

// runPublisher runs the publisher with args (and env added to the
// environment) to completion.
func runPublisher(t testing.TB, env []string, args ...string) result {
	t.Helper()
	return runCommand(t, bin.publisher, env, args...)
}

// runWorker runs a worker that is expected to exit by itself (a usage or
// config error).
func runWorker(t testing.TB, env []string, args ...string) result {
	t.Helper()
	return runCommand(t, bin.worker, env, args...)
}

func runCommand(t testing.TB, path string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s %s: %v", filepath.Base(path), strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within 60s; stderr:\n%s", filepath.Base(path), strings.Join(args, " "), stderr.String())
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	t.Logf("$ %s %s -> exit %d\nstdout: %s\nstderr: %s", filepath.Base(path), strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// writeFile writes content to name in a fresh temporary directory and
// returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// client is a test's own NATS connection and JetStream context.
type client struct {
	t  testing.TB
	nc *nats.Conn
	js jetstream.JetStream
}

func connect(t testing.TB, s *testkit.NATSProcess) *client {
	t.Helper()
	return connectURL(t, s.URL())
}

// connectURL connects to the servers of url (comma-separated), reconnecting
// for ever, with opts after those.
func connectURL(t testing.TB, url string, opts ...nats.Option) *client {
	t.Helper()
	opts = append([]nats.Option{nats.Name("e2e test"), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc := testkit.Connect(t, url, opts...)
	return &client{t: t, nc: nc, js: testkit.JetStream(t, nc)}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// publishTask publishes a task to tasks.<typ> with msgID as Nats-Msg-Id and
// extra headers (key, value pairs).
func (c *client) publishTask(typ, msgID string, data []byte, kv ...string) *jetstream.PubAck {
	c.t.Helper()
	msg := nats.NewMsg("tasks." + typ)
	msg.Data = data
	for i := 0; i+1 < len(kv); i += 2 {
		msg.Header.Set(kv[i], kv[i+1])
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := c.js.PublishMsg(ctxTimeout(c.t, 10*time.Second), msg, opts...)
	if err != nil {
		c.t.Fatalf("publish tasks.%s %s: %v", typ, msgID, err)
	}
	return ack
}

// publishTasks publishes n tasks of typ with ids prefix0..prefix<n-1>
// asynchronously and waits for every ack.
func (c *client) publishTasks(typ, prefix string, n int, data []byte) {
	c.t.Helper()
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		id := prefix + strconv.Itoa(i)
		f, err := c.js.PublishAsync("tasks."+typ, data, jetstream.WithMsgID(id))
		if err != nil {
			c.t.Fatalf("publish async %s: %v", id, err)
		}
		futures = append(futures, f)
	}
	timeout := time.After(30 * time.Second)
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			c.t.Fatalf("publish %s: %v", f.Msg().Header.Get(nats.MsgIdHdr), err)
		case <-timeout:
			c.t.Fatal("publish acks did not arrive within 30s")
		}
	}
}

// streamInfo returns the info of stream, with per-subject counts for
// filter when it is not empty.
func (c *client) streamInfo(stream, filter string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	var opts []jetstream.StreamInfoOpt
	if filter != "" {
		opts = append(opts, jetstream.WithSubjectFilter(filter))
	}
	return s.Info(ctx, opts...)
}

// msgs returns the number of messages in stream, failing the test on error.
func (c *client) msgs(stream string) uint64 {
	c.t.Helper()
	info, err := c.streamInfo(stream, "")
	if err != nil {
		c.t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.Msgs
}

// subjects returns the message count of every subject of stream matching
// filter.
func (c *client) subjects(stream, filter string) (map[string]uint64, error) {
	info, err := c.streamInfo(stream, filter)
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// waitSubjects waits until stream holds at least n distinct subjects
// matching filter, and returns them.
func (c *client) waitSubjects(stream, filter string, n int, timeout time.Duration) map[string]uint64 {
	c.t.Helper()
	var got map[string]uint64
	testkit.Eventually(c.t, timeout, fmt.Sprintf("%d subjects %s in %s", n, filter, stream), func() (bool, string) {
		var err error
		got, err = c.subjects(stream, filter)
		if err != nil {
			return false, err.Error()
		}
		return len(got) >= n, fmt.Sprintf("have %d", len(got))
	})
	return got
}

// healthEvents is the last message of every HEALTH subject, headers and
// body run together (what no secret may appear in).
func (c *client) healthEvents() string {
	c.t.Helper()
	subjects, err := c.subjects("HEALTH", "health.>")
	if err != nil {
		c.t.Fatal(err)
	}
	var b strings.Builder
	for subj := range subjects {
		m := c.lastMsg("HEALTH", subj, 10*time.Second)
		b.WriteString(fmt.Sprint(m.Header) + string(m.Data))
	}
	return b.String()
}

// lastMsg waits for a message on subject in stream and returns the last.
func (c *client) lastMsg(stream, subject string, timeout time.Duration) *jetstream.RawStreamMsg {
	c.t.Helper()
	var msg *jetstream.RawStreamMsg
	testkit.Eventually(c.t, timeout, "a message on "+subject, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := c.js.Stream(ctx, stream)
		if err != nil {
			return false, err.Error()
		}
		msg, err = s.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return msg
}

// noMsg fails the test if stream holds a message on subject.
func (c *client) noMsg(stream, subject string) {
	c.t.Helper()
	ctx := ctxTimeout(c.t, 5*time.Second)
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		c.t.Fatalf("stream %s: %v", stream, err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, subject)
	if err == nil {
		c.t.Errorf("%s holds a message on %s, want none: headers %v body %q", stream, subject, msg.Header, msg.Data)
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		c.t.Fatalf("get %s from %s: %v", subject, stream, err)
	}
}

// consumerInfo returns the info of the shared workers consumer.
func (c *client) consumerInfo() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := c.js.Consumer(ctx, "TASKS", "workers")
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

// wantHeader checks that h has key set to want.
func wantHeader(t testing.TB, h nats.Header, key, want string) {
	t.Helper()
	if got := h.Get(key); got != want {
		t.Errorf("header %s = %q, want %q (headers %v)", key, got, want, h)
	}
}
