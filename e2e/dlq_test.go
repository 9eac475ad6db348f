package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// A replay killed with SIGKILL half-way and run again puts every task back
// in TASKS exactly once and empties the DLQ.
func TestDLQReplayKilledAndRerun(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", `backends:
  nope: {builtin: fail}
routes:
  nope: {backends: [nope]}
`)
	w := startWorker(t, s, "--config", cfg)
	c := connect(t, s)
	const n = 2000
	c.publishTasks("nope", "r", n, []byte("payload"))
	// Dead-lettered and gone from TASKS: a task is Termed only after its
	// DLQ copy is stored, so a kill between the two would leave the
	// original in TASKS beside its replay.
	testkit.Eventually(t, 60*time.Second, "every task dead-lettered", func() (bool, string) {
		got, left := c.msgs("DLQ"), c.msgs("TASKS")
		return got == n && left == 0, fmt.Sprintf("%d in the DLQ, %d still in TASKS", got, left)
	})
	w.Kill() // nothing consumes the replayed tasks: TASKS shows them all

	env := []string{"NATS_URL=" + s.URL()}
	replay := testkit.StartProcess(t, "publisher", bin.publisher, env, "dlq", "replay", "--rate", "1000/s")
	testkit.Eventually(t, 30*time.Second, "the replay under way", func() (bool, string) {
		got := c.msgs("TASKS")
		return got >= n/5, fmt.Sprintf("%d back in TASKS", got)
	})
	replay.Kill()
	if got := c.msgs("TASKS"); got == n {
		t.Fatal("the replay finished before it was killed; the test proves nothing")
	}

	r := runPublisher(t, env, "dlq", "replay")
	if r.code != 0 || !strings.HasPrefix(r.stderr, "replayed ") {
		t.Fatalf("re-run: exit %d, stderr %q", r.code, r.stderr)
	}
	if got, dlq := c.msgs("TASKS"), c.msgs("DLQ"); got != n || dlq != 0 {
		// Which tasks came back twice, and under which msg ids: the
		// re-run must be deduplicated by <id>-r<N>.
		if st, err := c.js.Stream(ctxTimeout(t, 5*time.Second), "TASKS"); err == nil {
			info, _ := st.Info(ctxTimeout(t, 5*time.Second))
			ids := map[string][]string{}
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
				if m, err := st.GetMsg(ctxTimeout(t, 5*time.Second), seq); err == nil {
					id := m.Header.Get("Task-Id")
					ids[id] = append(ids[id], m.Header.Get("Nats-Msg-Id")+"@"+m.Header.Get("Dlq-Replays"))
				}
			}
			for id, msgIDs := range ids {
				if len(msgIDs) > 1 {
					t.Logf("task %s in TASKS %d times: %v", id, len(msgIDs), msgIDs)
				}
			}
		}
		t.Fatalf("after the re-run: TASKS %d, DLQ %d; want %d, 0", got, dlq, n)
	}
}
