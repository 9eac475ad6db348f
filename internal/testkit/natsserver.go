package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// NATSConfig says what StartNATS starts.
type NATSConfig struct {
	// Bin is the nats-server binary. Required.
	Bin string
	// Name is the server_name. Default "e2e".
	Name string
	// Extra is more configuration after the kit's (for example an include
	// of a file under deploy/, or a cluster block); paths in it are
	// relative to dir, the directory of the config file.
	Extra func(dir string) string
	// Env is added to the server process's environment.
	Env []string
	// Conf, when set, is the whole configuration instead of the kit's and
	// Extra: it is given the process with its ports and directory chosen.
	Conf func(p *NATSProcess) string
}

// NATSProcess is a nats-server process, by default with JetStream on a file
// store and sync_interval: always, restartable on the same ports and store.
type NATSProcess struct {
	// Port is the client port, HTTPPort the monitoring port, both on
	// 127.0.0.1.
	Port, HTTPPort int
	// Dir holds the config file and the store.
	Dir string
	// Proc is the running process (the last one after a restart).
	Proc *Process
	t    testing.TB
	bin  string
	conf string // the config file
	env  []string
}

// StartNATS writes the config of c for a nats-server on free ports and a
// fresh store, starts it and waits until its JetStream is ready (its
// /healthz?js-enabled-only=true answers 200). It is killed, if still
// running, when the test ends.
func StartNATS(t testing.TB, c NATSConfig) *NATSProcess {
	t.Helper()
	p := newNATS(t, c)
	p.Start()
	return p
}

func newNATS(t testing.TB, c NATSConfig) *NATSProcess {
	t.Helper()
	if c.Bin == "" {
		t.Fatal("testkit.StartNATS: no nats-server binary")
	}
	if c.Name == "" {
		c.Name = "e2e"
	}
	p := &NATSProcess{t: t, Port: FreePort(t), HTTPPort: FreePort(t), Dir: t.TempDir(), bin: c.Bin, env: c.Env}
	p.conf = filepath.Join(p.Dir, "nats.conf")
	var conf string
	if c.Conf != nil {
		conf = c.Conf(p)
	} else {
		conf = fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  sync_interval: always
}
`, c.Name, p.Port, p.HTTPPort, filepath.Join(p.Dir, "store"))
		if c.Extra != nil {
			conf += c.Extra(p.Dir) + "\n"
		}
	}
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// URL is the client URL of the server.
func (p *NATSProcess) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.Port) }

// Start starts the server process (again, after Stop or a kill, on the same
// ports and store) and waits until its JetStream is ready.
func (p *NATSProcess) Start() {
	p.t.Helper()
	p.launch()
	p.waitReady()
}

func (p *NATSProcess) launch() {
	p.t.Helper()
	p.Proc = StartProcess(p.t, "nats-server", p.bin, p.env, "-c", p.conf)
}

func (p *NATSProcess) waitReady() {
	p.t.Helper()
	WaitHTTP(p.t, p.Proc, fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", p.HTTPPort), "nats-server healthz")
}

// Stop sends SIGTERM and waits for the server to exit.
func (p *NATSProcess) Stop() {
	p.t.Helper()
	p.Proc.Signal(syscall.SIGTERM)
	p.Proc.Wait(StopTimeout)
}

// NATSCluster is a cluster of nats-server processes with JetStream, each
// restartable on its own ports and store.
type NATSCluster struct {
	// Nodes are the servers, named by Names (n1, n2, ...).
	Nodes []*NATSProcess
	Names []string
}

// StartNATSCluster starts an n-node cluster (named n1, n2, ..., cluster
// e2e) of bin on free ports and waits until every node's JetStream is
// ready.
func StartNATSCluster(t testing.TB, bin string, n int) *NATSCluster {
	t.Helper()
	routePorts := make([]int, n)
	routes := make([]string, n)
	for i := range routePorts {
		routePorts[i] = FreePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i])
	}
	c := &NATSCluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		c.Nodes = append(c.Nodes, newNATS(t, NATSConfig{Bin: bin, Name: name, Extra: func(string) string {
			return fmt.Sprintf("cluster {\n  name: e2e\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}",
				routePorts[i], strings.Join(routes, ", "))
		}}))
		c.Names = append(c.Names, name)
	}
	// A node's JetStream is ready only once it has met the others: start
	// them all before waiting for any.
	for _, s := range c.Nodes {
		s.launch()
	}
	for _, s := range c.Nodes {
		s.waitReady()
	}
	return c
}

// URLs lists every node's client URL, comma-separated, as --nats-url and
// nats.Connect take them.
func (c *NATSCluster) URLs() string {
	urls := make([]string, 0, len(c.Nodes))
	for _, s := range c.Nodes {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}
