// Command chaos is Breakwater's chaos run: for a set time it publishes tasks
// at a fixed rate through two worker processes and a three-node nats-server
// cluster (replicas 3, sync_interval: always) while it kills a worker with
// SIGKILL and restarts it, restarts a server node, makes the HTTP backend
// fail, hang and flap, and publishes poison (a task whose id is not a
// subject-safe token). Then it waits for the work to settle and accounts for
// every published task from the streams themselves: a result in RESULTS, or
// an entry in the DLQ with its reason. A task in neither is lost.
//
//	go build -o bin/ ./cmd/worker github.com/nats-io/nats-server/v2
//	go run ./bench/chaos --worker bin/worker --nats-server bin/nats-server --duration 10m
//
// It prints one line per chaos event, then
//
//	published N   done N   dead-lettered N (reason N, ...)   lost N
//	duplicate backend calls N   duplicate results N   unacknowledged publishes N
//	latency p50 D p95 D p99 D
//
// and exits 1 when a task is lost. The faults repeat in cycles of at most 60
// s, so a longer run goes through the same faults more often. Latency is
// from the publish call to the result's stored timestamp, for tasks that
// succeeded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// options are the command line.
type options struct {
	worker, natsServer string
	dir                string
	duration, settle   time.Duration
	rate               int
	poisonEvery        int
	keep               bool
}

func main() {
	var o options
	flag.StringVar(&o.worker, "worker", "bin/worker", "worker binary")
	flag.StringVar(&o.natsServer, "nats-server", "bin/nats-server", "nats-server binary")
	flag.StringVar(&o.dir, "dir", "", "directory for stores, configs and logs (default: a new temporary one, removed at the end)")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long to publish under faults")
	flag.DurationVar(&o.settle, "settle", 3*time.Minute, "how long to wait afterwards for every task to be accounted for")
	flag.IntVar(&o.rate, "rate", 50, "tasks published per second")
	flag.IntVar(&o.poisonEvery, "poison-every", 40, "every Nth task is poison (0: none)")
	flag.BoolVar(&o.keep, "keep", false, "keep the directory (logs) at the end")
	flag.Parse()
	if o.rate <= 0 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "chaos: --rate and --duration must be positive")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	if rep.lost > 0 {
		os.Exit(1)
	}
}

// taskType is the type, and route, of the run's tasks.
const taskType = "chaos"

// idHeader carries the run's own id of a task, poison included (whose
// Task-Id is deliberately invalid); the DLQ keeps every original header.
const idHeader = "Chaos-Id"

// report is the outcome of a run.
type report struct {
	published, done, unacked int
	dead                     map[string]int // by reason
	lost                     int
	dupCalls, dupResults     int
	latencies                []time.Duration
}

func run(ctx context.Context, o options, out io.Writer) (*report, error) {
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "breakwater-chaos-"); err != nil {
			return nil, err
		}
		defer func() {
			if !o.keep {
				os.RemoveAll(dir)
			}
		}()
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(out, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	logf("chaos: %s at %d/s through 2 workers and 3 nodes, dir %s", o.duration, o.rate, dir)

	be := newBackend()
	srv := httptest.NewServer(be)
	defer srv.Close()

	cl, err := startCluster(ctx, o.natsServer, dir)
	if err != nil {
		return nil, err
	}
	defer cl.stop()

	cfg := filepath.Join(dir, "worker.yaml")
	if err := os.WriteFile(cfg, []byte(workerConfig(srv.URL)), 0o600); err != nil {
		return nil, err
	}
	workers := make([]*proc, 2)
	for i := range workers {
		name := fmt.Sprintf("w%d", i+1)
		workers[i] = &proc{name: name, path: o.worker, log: filepath.Join(dir, name+".log"),
			args: []string{"--config", cfg, "--nats-url", cl.urls(), "--id", name, "--log-format", "json"}}
		if err := workers[i].start(); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, w := range workers {
			w.stop(30 * time.Second)
		}
	}()

	nc, err := nats.Connect(cl.urls(), nats.Name("breakwater chaos"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := waitStreams(ctx, js, 60*time.Second, "TASKS", "RESULTS", "DLQ"); err != nil {
		return nil, err
	}
	logf("cluster and workers up")

	book := newBooks()
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	var readers sync.WaitGroup
	readErr := make(chan error, 2)
	for _, r := range []struct {
		stream, filter string
		fn             func(jetstream.Msg)
	}{
		{"RESULTS", "results." + taskType + ".>", book.result},
		{"DLQ", "dlq." + taskType, book.deadLetter},
	} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := follow(readCtx, js, r.stream, r.filter, r.fn); err != nil && readCtx.Err() == nil {
				readErr <- fmt.Errorf("read %s: %w", r.stream, err)
			}
		}()
	}

	// Publishing and faults run together for o.duration.
	pubCtx, stopPub := context.WithTimeout(ctx, o.duration)
	var faults sync.WaitGroup
	faults.Add(1)
	go func() {
		defer faults.Done()
		chaos(pubCtx, o.duration, be, cl, workers, logf)
	}()
	publish(pubCtx, js, o, book)
	stopPub()
	faults.Wait()
	be.setMode(modeOK)
	for _, w := range workers {
		if !w.running() {
			_ = w.start()
		}
	}
	cl.ensureUp()
	logf("published %d; settling (up to %s)", book.publishedCount(), o.settle)

	deadline := time.Now().Add(o.settle)
	for {
		missing := book.missing()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logf("settle: %d tasks not accounted for", missing)
			break
		}
		select {
		case err := <-readErr:
			return nil, err
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	stopReading()
	readers.Wait()

	rep := book.report(be)
	rep.print(out)
	if rep.lost > 0 {
		for _, id := range book.missingIDs(20) {
			fmt.Fprintf(out, "lost: %s\n", id)
		}
		fmt.Fprintf(out, "logs in %s (kept)\n", dir)
		o.keep = true
	}
	return rep, nil
}

// workerConfig is the workers' config: one HTTP backend with short timeouts
// so that faults show within seconds, replicas 3, and a short ack_wait so
// that a killed worker's tasks come back soon.
func workerConfig(url string) string {
	return fmt.Sprintf(`streams: {replicas: 3}
worker: {concurrency: 32, ack_wait: 5s, max_deliver: 5}
health: {interval: 2s}
backends:
  flaky:
    http: {url: %s/run}
    timeout: 500ms
    retry: {max_attempts: 3, backoff: 50ms, max_backoff: 500ms, jitter: 0.2}
    breaker: {failure_threshold: 5, delay: 2s, success_threshold: 2}
routes:
  %s: {backends: [flaky]}
`, url, taskType)
}

// chaos injects the faults in cycles of min(duration, 60s) until ctx ends.
func chaos(ctx context.Context, d time.Duration, be *backend, cl *cluster, workers []*proc, logf func(string, ...any)) {
	cycle := min(d, 60*time.Second)
	at := func(f float64) time.Duration { return time.Duration(f * float64(cycle)) }
	type step struct {
		at time.Duration
		do func()
	}
	node := 0
	steps := []step{
		{at(0.10), func() { logf("backend: fail (500)"); be.setMode(modeFail) }},
		{at(0.20), func() { logf("backend: ok"); be.setMode(modeOK) }},
		{at(0.25), func() { killRestart(ctx, workers[0], logf) }},
		{at(0.40), func() {
			n := cl.nodes[node%len(cl.nodes)]
			node++
			logf("nats: restart %s", n.name)
			if err := cl.restart(ctx, n); err != nil {
				logf("nats: restart %s: %v", n.name, err)
				return
			}
			logf("nats: %s back and healthy", n.name)
		}},
		{at(0.55), func() { logf("backend: hang"); be.setMode(modeHang) }},
		{at(0.62), func() { logf("backend: ok"); be.setMode(modeOK) }},
		{at(0.70), func() { logf("backend: flap (500 and 200 every 250ms)"); be.setMode(modeFlap) }},
		{at(0.80), func() { logf("backend: ok"); be.setMode(modeOK) }},
		{at(0.85), func() { killRestart(ctx, workers[1], logf) }},
	}
	start := time.Now()
	for c := time.Duration(0); ; c += cycle {
		for _, s := range steps {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(c + s.at))):
				s.do()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(c + cycle))):
		}
	}
}

func killRestart(ctx context.Context, w *proc, logf func(string, ...any)) {
	logf("worker: kill -9 %s", w.name)
	w.kill()
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	if err := w.start(); err != nil {
		logf("worker: restart %s: %v", w.name, err)
		return
	}
	logf("worker: %s restarted", w.name)
}

// publish publishes at o.rate until ctx ends. Each task is published until
// the server acknowledges it (same Nats-Msg-Id, so a retry after a lost ack
// is dropped as a duplicate), for at most a minute.
func publish(ctx context.Context, js jetstream.JetStream, o options, book *books) {
	tick := time.NewTicker(time.Second / time.Duration(o.rate))
	defer tick.Stop()
	sem := make(chan struct{}, 512) // publishes waiting on an ack at once
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		id := fmt.Sprintf("c%07d", n)
		poison := o.poisonEvery > 0 && n%o.poisonEvery == o.poisonEvery-1
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			msg := nats.NewMsg("tasks." + taskType)
			msg.Data = []byte(`{"id":"` + id + `"}`)
			msg.Header.Set(idHeader, id)
			if poison {
				msg.Header.Set("Task-Id", id+"/poison") // not a subject-safe token
			} else {
				msg.Header.Set("Task-Id", id)
			}
			start := time.Now()
			book.sent(id, start)
			pubDeadline := start.Add(time.Minute)
			for {
				pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := js.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
				cancel()
				if err == nil {
					book.acked(id)
					return
				}
				if time.Now().After(pubDeadline) {
					return // counted as unacknowledged
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
}

// follow reads every message of stream matching filter, from the first,
// until ctx ends. An ordered consumer recreates itself across server
// restarts and leader changes.
func follow(ctx context.Context, js jetstream.JetStream, stream, filter string, fn func(jetstream.Msg)) error {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(fn)
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}

// waitStreams waits until every stream exists (the workers create them).
func waitStreams(ctx context.Context, js jetstream.JetStream, timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	for _, name := range names {
		for {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.Stream(sctx, name)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("stream %s: %w", name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// books keeps what was published and what came out, by task id.
type books struct {
	mu       sync.Mutex
	sentAt   map[string]time.Time
	ackedIDs map[string]bool
	results  map[string]int // result messages per id
	doneAt   map[string]time.Time
	dlq      map[string]string // id → reason of its first DLQ entry
	dlqN     map[string]int
}

func newBooks() *books {
	return &books{sentAt: map[string]time.Time{}, ackedIDs: map[string]bool{}, results: map[string]int{},
		doneAt: map[string]time.Time{}, dlq: map[string]string{}, dlqN: map[string]int{}}
}

func (b *books) sent(id string, at time.Time) {
	b.mu.Lock()
	b.sentAt[id] = at
	b.mu.Unlock()
}

func (b *books) acked(id string) {
	b.mu.Lock()
	b.ackedIDs[id] = true
	b.mu.Unlock()
}

func (b *books) result(m jetstream.Msg) {
	id := m.Headers().Get("Task-Id")
	md, err := m.Metadata()
	b.mu.Lock()
	b.results[id]++
	if err == nil && b.results[id] == 1 {
		b.doneAt[id] = md.Timestamp
	}
	b.mu.Unlock()
}

func (b *books) deadLetter(m jetstream.Msg) {
	id := m.Headers().Get(idHeader)
	b.mu.Lock()
	if _, ok := b.dlq[id]; !ok {
		b.dlq[id] = m.Headers().Get("Dlq-Reason")
	}
	b.dlqN[id]++
	b.mu.Unlock()
}

func (b *books) publishedCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.ackedIDs)
}

// missingIDs returns up to n acknowledged ids with neither a result nor a
// DLQ entry, sorted.
func (b *books) missingIDs(n int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for id := range b.ackedIDs {
		if b.results[id] == 0 && b.dlq[id] == "" && b.dlqN[id] == 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > n {
		ids = ids[:n]
	}
	return ids
}

func (b *books) missing() int { return len(b.missingIDs(1 << 30)) }

func (b *books) report(be *backend) *report {
	missing := b.missing()
	b.mu.Lock()
	defer b.mu.Unlock()
	r := &report{published: len(b.ackedIDs), unacked: len(b.sentAt) - len(b.ackedIDs), dead: map[string]int{}, lost: missing}
	for id := range b.ackedIDs {
		switch {
		case b.results[id] > 0:
			r.done++
			if b.results[id] > 1 {
				r.dupResults += b.results[id] - 1
			}
			if at, ok := b.doneAt[id]; ok {
				r.latencies = append(r.latencies, at.Sub(b.sentAt[id]))
			}
		case b.dlqN[id] > 0:
			reason := b.dlq[id]
			if reason == "" {
				reason = "(none)"
			}
			r.dead[reason]++
		}
	}
	r.dupCalls = be.duplicates()
	slices.Sort(r.latencies)
	return r
}

func (r *report) print(w io.Writer) {
	reasons := make([]string, 0, len(r.dead))
	total := 0
	for k, n := range r.dead {
		reasons = append(reasons, fmt.Sprintf("%s %d", k, n))
		total += n
	}
	slices.Sort(reasons)
	fmt.Fprintf(w, "published %d\ndone %d\ndead-lettered %d (%s)\nlost %d\n", r.published, r.done, total, strings.Join(reasons, ", "), r.lost)
	fmt.Fprintf(w, "duplicate backend calls %d\nduplicate results %d\nunacknowledged publishes %d\n", r.dupCalls, r.dupResults, r.unacked)
	fmt.Fprintf(w, "latency p50 %s p95 %s p99 %s (n %d)\n", r.pct(50), r.pct(95), r.pct(99), len(r.latencies))
}

func (r *report) pct(p int) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := (len(r.latencies)*p + 99) / 100
	return r.latencies[max(i-1, 0)].Round(time.Millisecond)
}

// Backend modes.
const (
	modeOK int32 = iota
	modeFail
	modeHang
	modeFlap
)

// backend is the HTTP backend under chaos: it echoes the payload, and
// counts successful calls per task so that a second one (a task run twice)
// shows.
type backend struct {
	mode atomic.Int32
	mu   sync.Mutex
	ok   map[string]int
}

func newBackend() *backend { return &backend{ok: map[string]int{}} }

func (b *backend) setMode(m int32) { b.mode.Store(m) }

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fail := false
	switch b.mode.Load() {
	case modeFail:
		fail = true
	case modeHang:
		<-r.Context().Done() // until the worker's timeout gives up
		return
	case modeFlap:
		fail = time.Now().UnixMilli()/250%2 == 0
	}
	if fail {
		http.Error(w, "chaos: failing", http.StatusInternalServerError)
		return
	}
	b.mu.Lock()
	b.ok[r.Header.Get("Task-Id")]++
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// duplicates is the number of successful calls beyond the first per task.
func (b *backend) duplicates() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.ok {
		n += c - 1
	}
	return n
}

// proc is a restartable child process whose output goes to a log file.
type proc struct {
	name, path, log string
	args            []string
	mu              sync.Mutex
	cmd             *exec.Cmd
	done            chan struct{}
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// stop sends SIGTERM and waits up to timeout, then SIGKILL.
func (p *proc) stop(timeout time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
	}
}

// node is one nats-server of the cluster.
type node struct {
	*proc
	port, httpPort int
}

// cluster is three nats-server processes on loopback forming one
// JetStream cluster.
type cluster struct {
	nodes []*node
}

func startCluster(ctx context.Context, bin, dir string) (*cluster, error) {
	ports, err := freePorts(9)
	if err != nil {
		return nil, err
	}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[6+i]))
	}
	cl := &cluster{}
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(dir, name+".conf")
		text := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, ports[i], ports[3+i], filepath.Join(dir, name), ports[6+i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, err
		}
		n := &node{proc: &proc{name: name, path: bin, log: filepath.Join(dir, name+".log"), args: []string{"-c", conf}},
			port: ports[i], httpPort: ports[3+i]}
		cl.nodes = append(cl.nodes, n)
		if err := n.start(); err != nil {
			cl.stop()
			return nil, err
		}
	}
	for _, n := range cl.nodes {
		if err := n.waitHealthy(ctx, 60*time.Second); err != nil {
			cl.stop()
			return nil, err
		}
	}
	return cl, nil
}

func (c *cluster) urls() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	return strings.Join(u, ",")
}

// restart stops n (SIGTERM), starts it again and waits until its
// JetStream is healthy (caught up).
func (c *cluster) restart(ctx context.Context, n *node) error {
	n.stop(20 * time.Second)
	if err := n.start(); err != nil {
		return err
	}
	return n.waitHealthy(ctx, 60*time.Second)
}

// ensureUp restarts any node that is not running.
func (c *cluster) ensureUp() {
	for _, n := range c.nodes {
		if !n.running() {
			_ = n.start()
		}
	}
}

func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.stop(20 * time.Second)
	}
}

func (n *node) waitHealthy(ctx context.Context, timeout time.Duration) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", n.httpPort)
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if !n.running() {
			return fmt.Errorf("%s exited (see %s)", n.name, n.log)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not healthy: %w", n.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePorts returns n TCP ports on 127.0.0.1 that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
