package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// Timeouts of the harness. Generous, because CI machines are slow and the
// race detector slows the test process; conditions are polled, so a
// passing test never waits them out.
const (
	startTimeout = 20 * time.Second // a process becomes ready
	stopTimeout  = 20 * time.Second // a process exits after SIGTERM
	pollInterval = 20 * time.Millisecond
)

// waitFor polls cond until it returns true or timeout passes, then fails the
// test with what and cond's last message.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, msg)
		}
		time.Sleep(pollInterval)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for a process's writers and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a started binary whose output is captured. Cleanup kills it if
// the test left it running and logs its output when the test failed.
type process struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's error, set before done is closed
}

func startProcess(t testing.TB, name, path string, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signal %s %v: %v", p.name, sig, err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code (-1 when a signal ended it); it fails the test on timeout.
func (p *process) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *process) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.wait(stopTimeout)
}

// natsServer is a nats-server process with JetStream, file storage and
// sync_interval: always, restartable on the same port and store.
type natsServer struct {
	t        testing.TB
	port     int
	httpPort int
	conf     string
	env      []string // added to the server process's environment
	proc     *process
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	dir := t.TempDir()
	s := &natsServer{t: t, port: freePort(t), httpPort: freePort(t), conf: filepath.Join(dir, "nats.conf")}
	conf := fmt.Sprintf(`listen: 127.0.0.1:%d
http: 127.0.0.1:%d
server_name: e2e
jetstream {
  store_dir: %q
  sync_interval: always
}
`, s.port, s.httpPort, filepath.Join(dir, "store"))
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	return s
}

// startNATSWith starts a nats-server like startNATS whose config also has
// extra (for example an include of a file under deploy/), with env added to
// the server process's environment. Paths in extra are relative to dir,
// the directory of the config file.
func startNATSWith(t testing.TB, extra func(dir string) string, env []string) *natsServer {
	t.Helper()
	dir := t.TempDir()
	s := &natsServer{t: t, port: freePort(t), httpPort: freePort(t), conf: filepath.Join(dir, "nats.conf"), env: env}
	conf := fmt.Sprintf(`listen: 127.0.0.1:%d
http: 127.0.0.1:%d
server_name: e2e
jetstream {
  store_dir: %q
  sync_interval: always
}
%s
`, s.port, s.httpPort, filepath.Join(dir, "store"), extra(dir))
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	return s
}

// URL is the client URL of the server.
func (s *natsServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// start starts the server process and waits until JetStream is ready.
func (s *natsServer) start() {
	s.t.Helper()
	s.proc = startProcess(s.t, "nats-server", bin.natsServer, s.env, "-c", s.conf)
	health := fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", s.httpPort)
	waitHTTP(s.t, s.proc, health, "nats-server healthz")
}

// stop sends SIGTERM and waits for the server to exit.
func (s *natsServer) stop() {
	s.t.Helper()
	s.proc.signal(syscall.SIGTERM)
	s.proc.wait(stopTimeout)
}

// waitHTTP polls url until it answers 200, failing early if p exits.
func waitHTTP(t testing.TB, p *process, url, what string) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	waitFor(t, startTimeout, what, func() (bool, string) {
		if p.exited() {
			t.Fatalf("%s exited while waiting for %s: %v", p.name, what, p.err)
		}
		resp, err := client.Get(url)
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(body))
	})
}

// worker is a running worker process.
type worker struct {
	*process
	httpAddr string
}

// startWorker starts a worker connected to s (nil: args give the URL) with
// extra args, and waits until /readyz answers 200.
func startWorker(t testing.TB, s *natsServer, args ...string) *worker {
	t.Helper()
	w := startWorkerNoWait(t, s, args...)
	w.waitReady()
	return w
}

// startWorkerNoWait starts a worker without waiting for readiness.
func startWorkerNoWait(t testing.TB, s *natsServer, args ...string) *worker {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	all := []string{"--http", addr, "--log-format", "text", "--log-level", "debug"}
	if s != nil {
		all = append(all, "--nats-url", s.URL())
	}
	all = append(all, args...)
	return &worker{process: startProcess(t, "worker", bin.worker, nil, all...), httpAddr: addr}
}

func (w *worker) waitReady() {
	w.t.Helper()
	waitHTTP(w.t, w.process, "http://"+w.httpAddr+"/readyz", "worker readyz")
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

func connect(t testing.TB, s *natsServer) *client {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.Name("e2e test"),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect %s: %v", s.URL(), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, nc: nc, js: js}
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
	waitFor(c.t, timeout, fmt.Sprintf("%d subjects %s in %s", n, filter, stream), func() (bool, string) {
		var err error
		got, err = c.subjects(stream, filter)
		if err != nil {
			return false, err.Error()
		}
		return len(got) >= n, fmt.Sprintf("have %d", len(got))
	})
	return got
}

// lastMsg waits for a message on subject in stream and returns the last.
func (c *client) lastMsg(stream, subject string, timeout time.Duration) *jetstream.RawStreamMsg {
	c.t.Helper()
	var msg *jetstream.RawStreamMsg
	waitFor(c.t, timeout, "a message on "+subject, func() (bool, string) {
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
