package testkit_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// recorder is a testing.TB whose Fatalf records and ends its goroutine.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventually(t *testing.T) {
	n := 0
	testkit.Eventually(t, 5*time.Second, "the third ask", func() (bool, string) { n++; return n == 3, "" })
	if n != 3 {
		t.Errorf("asked %d times, want 3", n)
	}
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.Eventually(r, 50*time.Millisecond, "never", func() (bool, string) { return false, "still no" })
	}()
	<-done
	if !strings.Contains(r.msg, "waiting for never: still no") {
		t.Errorf("failure %q, want what and the last detail", r.msg)
	}
}

func TestConsistently(t *testing.T) {
	n := 0
	start := time.Now()
	testkit.Consistently(t, 300*time.Millisecond, "a steady count", func() (bool, string) { n++; return true, "" })
	if d := time.Since(start); d < 300*time.Millisecond || n < 3 {
		t.Errorf("asked %d times over %s, want at least 3 over 300ms", n, d)
	}
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		m := 0
		testkit.Consistently(r, 5*time.Second, "fewer than two", func() (bool, string) { m++; return m < 2, fmt.Sprint(m) })
	}()
	<-done
	if !strings.Contains(r.msg, "fewer than two no longer held: 2") {
		t.Errorf("failure %q, want what and the detail of the first miss", r.msg)
	}
}

func TestTasks(t *testing.T) {
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := testkit.NewTasks(map[string]time.Time{"sleep/t1": since})
	if got, ok := r.Running("sleep", "t1"); !ok || !got.Equal(since) {
		t.Errorf("Running(sleep, t1): got %v, %v; want %v, true", got, ok, since)
	}
	if r.Cancel("sleep", "t2") {
		t.Error("Cancel of a task not running reports it stopped")
	}
	if !r.Cancel("sleep", "t1") {
		t.Error("Cancel of a running task reports it not running")
	}
	if _, ok := r.Running("sleep", "t1"); ok {
		t.Error("a cancelled task still runs")
	}
	if got := r.Cancelled(); len(got) != 1 || got[0] != "sleep/t1" {
		t.Errorf("Cancelled: got %v, want [sleep/t1]", got)
	}
}

func TestBufferLines(t *testing.T) {
	var b testkit.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		fmt.Fprintln(&b, "a 1")
	}()
	fmt.Fprintln(&b, "b 2")
	<-done
	if got := testkit.Lines(b.String(), "a"); got != "a 1" {
		t.Errorf("Lines(%q, a): got %q, want %q", b.String(), got, "a 1")
	}
}
