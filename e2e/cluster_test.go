package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
)

// cluster is a cluster of nats-server processes with JetStream, each
// restartable on its own ports and store.
type cluster struct {
	t     testing.TB
	nodes []*natsServer
	names []string
}

// startCluster starts an n-node cluster (named n1, n2, ...) on free ports
// and waits until every node's JetStream is ready.
func startCluster(t testing.TB, n int) *cluster {
	t.Helper()
	c := &cluster{t: t}
	routePorts := make([]int, n)
	var routes []string
	for i := range routePorts {
		routePorts[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i]))
	}
	for i := range n {
		dir := t.TempDir()
		name := fmt.Sprintf("n%d", i+1)
		s := &natsServer{t: t, port: freePort(t), httpPort: freePort(t), conf: filepath.Join(dir, "nats.conf")}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: e2e
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, s.port, s.httpPort, filepath.Join(dir, "store"), routePorts[i], strings.Join(routes, ", "))
		if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, s)
		c.names = append(c.names, name)
	}
	// A node's JetStream is ready only once it has met the others: start
	// them all before waiting for any.
	for _, s := range c.nodes {
		s.proc = startProcess(t, "nats-server", bin.natsServer, s.env, "-c", s.conf)
	}
	for _, s := range c.nodes {
		waitHTTP(t, s.proc, fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", s.httpPort), "cluster node healthz")
	}
	return c
}

// URLs lists every node's client URL, comma-separated, as --nats-url takes
// them.
func (c *cluster) URLs() string {
	var urls []string
	for _, s := range c.nodes {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}

// connect is the test's own connection to the cluster.
func (c *cluster) connect() *client {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.Name("e2e test"),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		c.t.Fatalf("connect %s: %v", c.URLs(), err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return &client{t: c.t, nc: nc, js: js}
}

// streamLeader is the node leading stream (nil while it has no leader).
func (c *cluster) streamLeader(cl *client, stream string) *natsServer {
	c.t.Helper()
	resp, err := cl.nc.Request("$JS.API.STREAM.INFO."+stream, nil, 2*time.Second)
	if err != nil {
		return nil
	}
	var info struct {
		Cluster *struct {
			Leader string `json:"leader"`
		} `json:"cluster"`
	}
	if json.Unmarshal(resp.Data, &info) != nil || info.Cluster == nil {
		return nil
	}
	for i, name := range c.names {
		if name == info.Cluster.Leader {
			return c.nodes[i]
		}
	}
	return nil
}

// TestScheduleSurvivesLeaderLoss: on a 3-node cluster with TASKS at R3,
// an @every 1s schedule keeps firing when the node leading TASKS is killed,
// and no time slot fires twice: two fired messages (distinct TASKS
// sequences) with one Nats-Schedule-Next would be one slot fired twice. The
// test reads the firings itself, with a consumer of its own on
// tasks.<type>, as the server stores them: through a worker, the headers
// that tell the slot (Nats-*) are not passed on, by design.
func TestScheduleSurvivesLeaderLoss(t *testing.T) {
	t.Parallel()
	cl := startCluster(t, 3)
	c := cl.connect()
	ctx := ctxTimeout(t, 2*time.Minute)
	// A new cluster answers only once it has elected its meta leader.
	waitFor(t, startTimeout, "the streams at R3", func() (bool, string) {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := bus.EnsureStreams(sctx, c.js, bus.Topology{Replicas: 3})
		return err == nil, fmt.Sprint(err)
	})
	cons, err := c.js.CreateOrUpdateConsumer(ctx, "TASKS", jetstream.ConsumerConfig{
		Durable: "e2e-firings", FilterSubject: "tasks.tick", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := runPublisher(t, nil, "schedule", "add", "beat", "tick", "x", "--every", "1s", "--nats-url", cl.URLs())
	if r.code != 0 {
		t.Fatalf("schedule add: exit %d: %s", r.code, r.stderr)
	}
	// slots maps each time slot fired (the Nats-Schedule-Next of its
	// firing) to the TASKS sequences fired for it and when it was seen.
	type slot struct {
		seqs map[uint64]bool
		seen time.Time
	}
	slots := map[string]*slot{}
	since := func(from time.Time) int {
		batch, err := cons.FetchNoWait(100)
		if err == nil {
			for m := range batch.Messages() {
				meta, err := m.Metadata()
				if err != nil {
					t.Fatal(err)
				}
				key := m.Headers().Get("Nats-Schedule-Next")
				if key == "" || m.Headers().Get("Nats-Scheduler") != "schedules.every.beat" {
					t.Errorf("TASKS %d on tasks.tick is not a firing of beat: headers %v", meta.Sequence.Stream, m.Headers())
				}
				s := slots[key]
				if s == nil {
					s = &slot{seqs: map[uint64]bool{}, seen: time.Now()}
					slots[key] = s
				}
				s.seqs[meta.Sequence.Stream] = true
				_ = m.Ack() // a lost ack redelivers the same sequence: not a second firing
			}
		}
		n := 0
		for _, s := range slots {
			if s.seen.After(from) {
				n++
			}
		}
		return n
	}
	waitFor(t, 20*time.Second, "3 firings before the leader is killed", func() (bool, string) {
		n := since(time.Time{})
		return n >= 3, fmt.Sprintf("%d slots", n)
	})
	var leader *natsServer
	waitFor(t, 10*time.Second, "the TASKS leader", func() (bool, string) {
		leader = cl.streamLeader(c, "TASKS")
		return leader != nil, "no leader"
	})
	killed := time.Now()
	leader.proc.kill()
	t.Logf("killed the TASKS leader on port %d", leader.port)
	waitFor(t, 45*time.Second, "3 firings after the leader was killed", func() (bool, string) {
		n := since(killed)
		return n >= 3, fmt.Sprintf("%d slots since the kill", n)
	})
	for key, s := range slots {
		if len(s.seqs) > 1 {
			t.Errorf("the slot before %s fired %d times: TASKS sequences %v", key, len(s.seqs), s.seqs)
		}
	}
	t.Logf("%d slots fired, the leader killed at %s", len(slots), killed.Format(time.RFC3339Nano))
}
