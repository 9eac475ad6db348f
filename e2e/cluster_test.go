package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

// cluster is a cluster of nats-server processes (testkit.NATSCluster of
// the built binary).
type cluster struct {
	*testkit.NATSCluster
	t testing.TB
}

// startCluster starts an n-node cluster (named n1, n2, ...) on free ports
// and waits until every node's JetStream is ready.
func startCluster(t testing.TB, n int) *cluster {
	t.Helper()
	return &cluster{NATSCluster: testkit.StartNATSCluster(t, bin.natsServer, n), t: t}
}

// connect is the test's own connection to the cluster.
func (c *cluster) connect() *client {
	c.t.Helper()
	return connectURL(c.t, c.URLs())
}

// streamLeader is the node leading stream (nil while it has no leader).
func (c *cluster) streamLeader(cl *client, stream string) *testkit.NATSProcess {
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
	for i, name := range c.Names {
		if name == info.Cluster.Leader {
			return c.Nodes[i]
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
	testkit.Eventually(t, testkit.StartTimeout, "the streams at R3", func() (bool, string) {
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
	testkit.Eventually(t, 20*time.Second, "3 firings before the leader is killed", func() (bool, string) {
		n := since(time.Time{})
		return n >= 3, fmt.Sprintf("%d slots", n)
	})
	var leader *testkit.NATSProcess
	testkit.Eventually(t, 10*time.Second, "the TASKS leader", func() (bool, string) {
		leader = cl.streamLeader(c, "TASKS")
		return leader != nil, "no leader"
	})
	killed := time.Now()
	leader.Proc.Kill()
	t.Logf("killed the TASKS leader on port %d", leader.Port)
	testkit.Eventually(t, 45*time.Second, "3 firings after the leader was killed", func() (bool, string) {
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
