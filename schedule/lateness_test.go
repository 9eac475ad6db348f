package schedule_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/schedule"
)

// TestLateness measures how late the server fires delayed tasks: the
// fired task's stream time minus the time it was due, for 1,000 tasks due
// over 5 seconds (200 a second), on an embedded server that fsyncs every
// write. It prints p50, p99 and max; run it with BW_LATENESS=1:
//
//	BW_LATENESS=1 go test -run TestLateness -v ./schedule/
func TestLateness(t *testing.T) {
	if os.Getenv("BW_LATENESS") == "" {
		t.Skip("a measurement: set BW_LATENESS=1 to run it")
	}
	const n, perSecond = 1000, 200
	_, js := testkit.StartServer(t, testkit.SyncAlways()).JetStream(t)
	if err := bus.EnsureStreams(t.Context(), js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	c := schedule.New(js, schedule.Options{})
	first := time.Now().Add(3 * time.Second).Truncate(time.Second)
	due := map[string]time.Time{}
	for i := range n {
		id := fmt.Sprintf("l%d", i)
		at := first.Add(time.Duration(i/perSecond) * time.Second)
		due[id] = at
		if _, err := c.Delay(t.Context(), schedule.Delayed{ID: id, Type: "lat", At: at}); err != nil {
			t.Fatal(err)
		}
	}
	if time.Now().After(first) {
		t.Fatalf("publishing took too long: the first task was due before all were stored")
	}
	s, err := js.Stream(t.Context(), "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, "every task to fire", func() (bool, string) {
		info, err := s.Info(t.Context(), jetstream.WithSubjectFilter("tasks.lat"))
		if err != nil {
			return false, err.Error()
		}
		got := info.State.Subjects["tasks.lat"]
		return got == n, fmt.Sprintf("%d fired", got)
	})
	var late []time.Duration
	for seq := uint64(1); len(late) < n; {
		m, err := s.GetMsg(t.Context(), seq, jetstream.WithGetMsgSubject("tasks.lat"))
		if err != nil {
			t.Fatal(err)
		}
		seq = m.Sequence + 1
		d := m.Time.Sub(due[m.Header.Get("Task-Id")])
		if d < 0 {
			t.Errorf("task %s fired %s before it was due", m.Header.Get("Task-Id"), -d)
		}
		late = append(late, d)
	}
	slices.Sort(late)
	t.Logf("lateness of %d delayed tasks (fired - due, stream time, fsync always): p50 %s, p99 %s, max %s",
		n, late[n/2], late[n*99/100], late[n-1])
}
