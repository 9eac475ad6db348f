package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestChaos is the CI form of the chaos run (bench/chaos): 60 s of tasks at
// 50/s through two workers and a three-node cluster while a worker is
// killed with -9 and restarted, a server node restarts, the backend fails,
// hangs and flaps, and poison is published. Every published task must end
// as a result or a DLQ entry: lost 0. The chaos program is built without
// -race, like the other binaries, so the race detector does not slow it.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run takes over a minute")
	}
	t.Parallel()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./bench/chaos")
	build.Dir = modRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench/chaos: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "chaos"),
		"--worker", bin.worker, "--nats-server", bin.natsServer,
		"--duration", "60s", "--rate", "50", "--settle", "3m", "--dir", filepath.Join(dir, "run"))
	out, err := cmd.CombinedOutput()
	t.Logf("chaos output:\n%s", out)
	if ctx.Err() != nil {
		t.Fatal("chaos run did not finish within 6 minutes")
	}
	if err != nil {
		t.Errorf("chaos: %v", err)
	}
	count := func(re string) int {
		m := regexp.MustCompile(`(?m)` + re).FindSubmatch(out)
		if m == nil {
			t.Fatalf("chaos output lacks %q", re)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	if lost := count(`^lost (\d+)$`); lost != 0 {
		t.Errorf("lost %d, want 0", lost)
	}
	// At 50/s for 60s; a stalled publisher would make lost 0 meaningless.
	if pub := count(`^published (\d+)$`); pub < 2000 {
		t.Errorf("published %d, want at least 2000 (50/s for 60s)", pub)
	}
	if poison := count(`^dead-lettered \d+ \(.*poison (\d+)`); poison == 0 {
		t.Error("no poison task was dead-lettered as poison")
	}
	for _, ev := range []string{"worker: kill -9 w1", "worker: kill -9 w2", "nats: restart n1", "backend: fail", "backend: hang", "backend: flap"} {
		if !regexp.MustCompile(regexp.QuoteMeta(ev)).Match(out) {
			t.Errorf("chaos output lacks the event %q", ev)
		}
	}
}
