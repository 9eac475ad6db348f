package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/breakwater/breakwater/dlq"
)

// deadLetterMany stores n entries of type bulk (ids t0..t<n-1>), a few
// writers at once to keep set-up short.
func deadLetterMany(t testing.TB, e *env, n int) *dlq.Admin {
	t.Helper()
	ctx := context.Background()
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	var g errgroup.Group
	g.SetLimit(32)
	for k := range n {
		g.Go(func() error {
			id := fmt.Sprint("t", k)
			return w.Write(ctx, &dlq.Entry{ID: id, Type: "bulk", Subject: "tasks.bulk", Seq: uint64(k + 1),
				Header: nats.Header{"Task-Id": {id}}, Payload: []byte(id), Reason: dlq.Exhausted})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	a, err := dlq.NewAdmin(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// taskIDs counts the Task-Ids of every message in TASKS (a work queue:
// read by sequence, no consumer needed).
func taskIDs(t testing.TB, e *env) map[string]int {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[m.Header.Get("Task-Id")]++
	}
	return out
}

// A bulk replay cancelled part-way and run again puts every task in
// TASKS exactly once and empties the DLQ.
func TestReplayInterruptedAndRerun(t *testing.T) {
	const n, stopAfter = 300, 40
	e := newEnv(t)
	a := deadLetterMany(t, e, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sum, err := a.Replay(ctx, dlq.ReplayOptions{Progress: func(done, _ int) {
		if done == stopAfter {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted replay: %+v, %v; want context.Canceled", sum, err)
	}
	// Replay returned only once every entry it started was settled, so
	// its summary is exactly what the streams hold.
	if sum.Failed != 0 || sum.Skipped != 0 || sum.Done() >= n || sum.Done() < stopAfter {
		t.Fatalf("interrupted replay: %+v; want %d ≤ replayed < %d, none failed", sum, stopAfter, n)
	}
	left, tasks := int(e.count(t, "DLQ")), int(e.count(t, "TASKS"))
	if left != n-sum.Replayed || tasks != sum.Replayed {
		t.Fatalf("after the interruption: DLQ %d, TASKS %d; want %d, %d (summary %+v)", left, tasks, n-sum.Replayed, sum.Replayed, sum)
	}
	first := sum
	sum, err = a.Replay(context.Background(), dlq.ReplayOptions{})
	if err != nil || sum.Selected != left || sum.Replayed != left || sum.Failed != 0 {
		t.Fatalf("rerun: %+v, %v; want %d selected and replayed (first run %+v)", sum, err, left, first)
	}
	ids := taskIDs(t, e)
	for k := range n {
		if c := ids[fmt.Sprint("t", k)]; c != 1 {
			t.Errorf("task t%d is in TASKS %d times", k, c)
		}
	}
	if len(ids) != n || e.count(t, "DLQ") != 0 {
		t.Fatalf("TASKS holds %d distinct tasks, DLQ %d; want %d, 0", len(ids), e.count(t, "DLQ"), n)
	}
}

// A publish acknowledged but the entry not deleted (the run was killed
// between the two): the rerun's publish is a duplicate inside TASKS.
func TestReplayKilledBeforeDelete(t *testing.T) {
	e := newEnv(t)
	a := deadLetterMany(t, e, 3)
	ctx := context.Background()
	items, err := a.List(ctx, dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range items[:2] {
		_, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: a.ReplaySubject(i), Header: dlq.ReplayHeader(i), Data: i.Data},
			jetstream.WithMsgID(dlq.ReplayMsgID(i)))
		if err != nil {
			t.Fatal(err)
		}
	}
	if sum, err := a.Replay(ctx, dlq.ReplayOptions{}); err != nil || sum.Replayed != 3 {
		t.Fatalf("rerun: %+v, %v", sum, err)
	}
	if ids := taskIDs(t, e); len(ids) != 3 || ids["t0"] != 1 || ids["t1"] != 1 || ids["t2"] != 1 {
		t.Fatalf("TASKS: %v; want t0, t1, t2 once each", ids)
	}
}

func TestReplayRate(t *testing.T) {
	const n, perSecond = 21, 100.0
	e := newEnv(t)
	a := deadLetterMany(t, e, n)
	start := time.Now()
	sum, err := a.Replay(context.Background(), dlq.ReplayOptions{Rate: perSecond})
	took := time.Since(start)
	if err != nil || sum.Replayed != n {
		t.Fatalf("Replay = %+v, %v", sum, err)
	}
	// A burst of one: n entries take (n-1)/rate at least.
	if least := time.Duration(float64(n-1) / perSecond * float64(time.Second)); took < least {
		t.Fatalf("%d replays at %v/s took %v, want at least %v", n, perSecond, took, least)
	}
}

func TestReplayManyAtRate(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 entries")
	}
	const n = 10_000
	e := newEnv(t)
	a := deadLetterMany(t, e, n)
	sum, err := a.Replay(context.Background(), dlq.ReplayOptions{Rate: 20_000})
	if err != nil || sum.Replayed != n || sum.Failed != 0 {
		t.Fatalf("Replay = %+v, %v", sum, err)
	}
	if got, left := e.count(t, "TASKS"), e.count(t, "DLQ"); got != n || left != 0 {
		t.Fatalf("TASKS %d, DLQ %d; want %d, 0", got, left, n)
	}
}

// Dry runs report what they would do and change nothing.
func TestDryRun(t *testing.T) {
	e := newEnv(t)
	a := fill(t, e)
	ctx := context.Background()
	if _, err := e.js.Publish(ctx, "results.beta.b2", []byte("done")); err != nil {
		t.Fatal(err)
	}
	got := map[string]dlq.Outcome{}
	sum, err := a.Replay(ctx, dlq.ReplayOptions{DryRun: true, Filter: dlq.Filter{Types: []string{"beta"}},
		OnEntry: func(i *dlq.Item, out dlq.Outcome, err error) {
			if err != nil {
				t.Error(err)
			}
			got[i.ID()] = out
		}})
	if err != nil || sum.Replayed != 1 || sum.Skipped != 1 || got["b1"] != dlq.Replayed || got["b2"] != dlq.AlreadyDone {
		t.Fatalf("dry replay: %+v, %v, %v", sum, err, got)
	}
	psum, err := a.Purge(ctx, dlq.PurgeOptions{DryRun: true})
	if err != nil || psum.Purged != 5 {
		t.Fatalf("dry purge: %+v, %v", psum, err)
	}
	if d, tk := e.count(t, "DLQ"), e.count(t, "TASKS"); d != 5 || tk != 0 {
		t.Fatalf("after dry runs DLQ %d, TASKS %d; want 5, 0", d, tk)
	}
}

func TestBulkPurge(t *testing.T) {
	e := newEnv(t)
	a := fill(t, e)
	sum, err := a.Purge(context.Background(), dlq.PurgeOptions{Filter: dlq.Filter{Reasons: []dlq.Reason{dlq.Exhausted, dlq.Poison}}})
	if err != nil || sum.Purged != 3 || sum.Selected != 3 {
		t.Fatalf("Purge = %+v, %v", sum, err)
	}
	if got := ids(t, a, dlq.Filter{}); len(got) != 2 || got[0] != "a2" || got[1] != "c1" {
		t.Fatalf("left: %v; want a2, c1", got)
	}
}

// Entries that cannot be replayed stay in the DLQ and the error says so.
func TestReplayFailureKeepsEntry(t *testing.T) {
	e := newEnv(t)
	a := deadLetterMany(t, e, 2)
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "TASKS"); err != nil {
		t.Fatal(err)
	}
	sum, err := a.Replay(ctx, dlq.ReplayOptions{EntryTimeout: time.Second})
	if !errors.Is(err, dlq.ErrIncomplete) || sum.Failed != 2 || sum.Replayed != 0 {
		t.Fatalf("Replay = %+v, %v; want 2 failed and ErrIncomplete", sum, err)
	}
	if n := e.count(t, "DLQ"); n != 2 {
		t.Fatalf("DLQ holds %d, want both entries kept", n)
	}
}

// A bulk run reads its selection a page at a time: however many entries
// it goes through, it never holds more than its window, payloads
// included (Summary.MaxHeld counts every entry from the moment it is
// read until its work is done).
func TestBulkHoldsAtMostItsWindow(t *testing.T) {
	const n, window, parallel = 600, 24, 8
	e := newEnv(t)
	a := deadLetterMany(t, e, n)
	ctx := context.Background()
	var every []uint64
	for seq := uint64(1); seq <= n; seq += 3 {
		every = append(every, seq)
	}
	tests := []struct {
		name string
		run  func() (dlq.Summary, error)
		want int // entries done
	}{
		{"dry replay", func() (dlq.Summary, error) {
			return a.Replay(ctx, dlq.ReplayOptions{DryRun: true, Window: window, Parallel: parallel})
		}, n},
		{"dry purge by seq", func() (dlq.Summary, error) {
			return a.Purge(ctx, dlq.PurgeOptions{DryRun: true, Window: window, Parallel: parallel, Filter: dlq.Filter{Seqs: every}})
		}, len(every)},
		{"replay", func() (dlq.Summary, error) {
			return a.Replay(ctx, dlq.ReplayOptions{Window: window, Parallel: parallel, Filter: dlq.Filter{Limit: n / 2}})
		}, n / 2},
		{"purge", func() (dlq.Summary, error) {
			return a.Purge(ctx, dlq.PurgeOptions{Window: window, Parallel: parallel})
		}, n / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sum, err := tc.run()
			if err != nil || sum.Done() != tc.want || sum.Selected != tc.want {
				t.Fatalf("got %+v, %v; want %d selected and done", sum, err, tc.want)
			}
			if sum.MaxHeld < 1 || sum.MaxHeld > window {
				t.Fatalf("held up to %d entries at once, want 1..%d (window) for %d entries", sum.MaxHeld, window, tc.want)
			}
		})
	}
	if d, tk := e.count(t, "DLQ"), e.count(t, "TASKS"); d != 0 || tk != n/2 {
		t.Fatalf("DLQ %d, TASKS %d; want 0, %d", d, tk, n/2)
	}
}

// Read in pages as small as one entry, a bulk run selects exactly what
// Scan does, in the same order, whatever the filter.
func TestBulkSelectsWhatScanSelects(t *testing.T) {
	e := newEnv(t)
	a := fill(t, e)
	ctx := context.Background()
	third, err := a.Get(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    dlq.Filter
	}{
		{"all", dlq.Filter{}},
		{"limit", dlq.Filter{Limit: 3}},
		{"since and until", dlq.Filter{Since: third.Time, Until: third.Time}},
		{"until", dlq.Filter{Until: third.Time}},
		{"types", dlq.Filter{Types: []string{"beta", "code.gen"}}},
		{"reason and limit", dlq.Filter{Reasons: []dlq.Reason{dlq.Exhausted}, Limit: 1}},
		{"backend", dlq.Filter{Backends: []string{"y"}}},
		{"seqs", dlq.Filter{Seqs: []uint64{5, 2, 99, 4}}},
		{"seqs and reason", dlq.Filter{Seqs: []uint64{1, 2, 3}, Reasons: []dlq.Reason{dlq.Exhausted}}},
		{"none", dlq.Filter{Types: []string{"none"}}},
	}
	for _, tc := range tests {
		for _, window := range []int{1, 2} {
			t.Run(fmt.Sprint(tc.name, " window ", window), func(t *testing.T) {
				var got []string
				sum, err := a.Purge(ctx, dlq.PurgeOptions{Filter: tc.f, DryRun: true, Parallel: 1, Window: window,
					OnEntry: func(i *dlq.Item, _ dlq.Outcome, _ error) { got = append(got, i.ID()) }})
				want := ids(t, a, tc.f)
				if err != nil || !slices.Equal(got, want) || sum.Selected != len(want) || sum.Purged != len(want) {
					t.Fatalf("got %v (%+v, %v), want %v", got, sum, err, want)
				}
				if sum.MaxHeld > window {
					t.Fatalf("held %d entries, window %d", sum.MaxHeld, window)
				}
			})
		}
	}
}
