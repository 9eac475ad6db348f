package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/redact"
	"github.com/breakwater/breakwater/resilience"
)

func TestHeader(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	w := dlq.NewWriter(nil, dlq.WriterOptions{Topology: bus.Topology{}, Worker: "w7", Now: func() time.Time { return now },
		RedactHeaders: []string{"X-Session", "X-Internal-*"}})
	orig := nats.Header{
		"Nats-Msg-Id": {"m1"}, "X-Trace": {"a"}, "Authorization": {"Bearer sekrit"}, "cookie": {"c=1"},
		"X-Api-Key": {"k"}, "X-Session": {"s"}, "x-internal-user": {"bob"}, "Dlq-Replays": {"2"},
		"Nats-Expected-Stream": {"TASKS"}, "Nats-Rollup": {"all"}, "Content-Type": {"application/json"},
	}
	h := w.Header(&dlq.Entry{
		ID: "m1", Type: "echo", Subject: "tasks.echo", Seq: 9, Header: orig, Reason: dlq.Exhausted,
		Err: errors.New("X-Session: s3ss\n" + strings.Repeat("x", 2000)), Attempts: 3, Backends: []string{"a", "b"},
		History: []dlq.Record{dlq.NewRecord(1, "a", dlq.ClassTransient, 401, time.Millisecond, now, "w7",
			errString("upstream echoed X-Internal-User: bob"))},
	})
	want := map[string]string{
		"X-Trace": "a", "Content-Type": "application/json", "Task-Id": "m1", "Dlq-Reason": "exhausted", "Dlq-Attempts": "3",
		"Dlq-Backends": "a,b", "Dlq-Original-Subject": "tasks.echo", "Dlq-Original-Seq": "9", "Dlq-Original-Msg-Id": "m1",
		"Dlq-Failed-At": "2026-11-22T12:00:00Z", "Dlq-Worker": "w7",
		// 2 was forged: no replay wrote it (the Nats-Msg-Id is not m1-r2).
		"Dlq-Replays": "0",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	for k := range h {
		if w.Denied(k) || strings.HasPrefix(strings.ToLower(k), "nats-") {
			t.Errorf("the copy carries %s", k)
		}
	}
	if n := len(h.Get("Dlq-Error")); n != dlq.MaxErrorLen {
		t.Errorf("Dlq-Error length: got %d, want %d", n, dlq.MaxErrorLen)
	}
	if e := h.Get("Dlq-Error"); strings.Contains(e, "s3ss") {
		t.Errorf("Dlq-Error keeps a configured header's value: %.60q", e)
	}
	if v := h.Get(dlq.HeaderHistory); !strings.Contains(v, "X-Internal-User: REDACTED") {
		t.Errorf("history error not redacted with the configured headers: %s", v)
	}
	if orig.Get("Dlq-Reason") != "" || orig.Get("Dlq-Replays") != "2" {
		t.Error("Header modified the original headers")
	}
}

func TestNewWriterRefusesBadPattern(t *testing.T) {
	e := newEnv(t)
	_, err := dlq.EnsureWriter(context.Background(), e.js, dlq.WriterOptions{RedactHeaders: []string{"X Bad"}})
	if !errors.Is(err, dlq.ErrInvalidOption) || !errors.Is(err, redact.ErrInvalidPattern) {
		t.Errorf("EnsureWriter: got %v, want ErrInvalidOption and ErrInvalidPattern", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("NewWriter accepted a bad pattern")
		}
	}()
	dlq.NewWriter(nil, dlq.WriterOptions{RedactHeaders: []string{""}})
}

func TestReplayCount(t *testing.T) {
	tests := []struct {
		id, replays, msgID string
		want               int
	}{
		{"t1", "3", "t1-r3", 3},
		{"t1", "1", "t1-r1", 1},
		{"t1", "3", "t1-r2", 0}, // count and id disagree
		{"t1", "3", "", 0},      // no replay's id at all
		{"t1", "3", "t2-r3", 0}, // another task's replay id
		{"t1", "abc", "t1-rabc", 0},
		{"t1", "-1", "t1-r-1", 0},
		{"t1", "0", "t1-r0", 0},
		{"", "1", "-r1", 0},
		{"t1", "", "t1-r1", 0},
	}
	for _, tt := range tests {
		h := nats.Header{}
		if tt.replays != "" {
			h.Set("Dlq-Replays", tt.replays)
		}
		if tt.msgID != "" {
			h.Set("Nats-Msg-Id", tt.msgID)
		}
		if got := dlq.ReplayCount(tt.id, h); got != tt.want {
			t.Errorf("ReplayCount(%q, replays %q, msg id %q) = %d, want %d", tt.id, tt.replays, tt.msgID, got, tt.want)
		}
	}
}

// A publisher writes every Dlq-* header it likes, in any case, and the
// Nats-* headers that would steer the DLQ publish: the stored copy carries
// only the Writer's, and the publish is not derailed.
func TestForgedHeadersOnTask(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	w, err := dlq.EnsureWriter(ctx, e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	forged := nats.Header{
		"Task-Id": {"f1"}, "Dlq-Reason": {"cancelled"}, "dlq-reason": {"poison"}, "Dlq-Replays": {"7"},
		"Dlq-History": {`[{"delivery":1,"backend":"forged","class":"ok"}]`}, "Dlq-History-Dropped": {"99"},
		"Dlq-Error": {"all fine"}, "Dlq-Worker": {"evil"}, "Dlq-Original-Seq": {"1"}, "DLQ-ATTEMPTS": {"0"},
		"Dlq-Payload-Object": {"dlq-TASKS-1"}, "Dlq-Payload-Size": {"3"}, "Dlq-Original-Msg-Id": {"forged"},
		// Instructions to the server: on the DLQ publish each would fail
		// it (wrong stream, rollups not allowed) or purge the subject.
		"Nats-Expected-Stream": {"TASKS"}, "Nats-Expected-Last-Sequence": {"0"}, "Nats-Rollup": {"sub"},
		"Nats-TTL": {"1s"},
	}
	// Through TASKS as a publisher would send it (without the directives
	// TASKS itself refuses).
	toTasks := nats.Header{}
	for k, v := range forged {
		if k != "Nats-Rollup" && k != "Nats-TTL" && k != "Nats-Expected-Last-Sequence" {
			toTasks[k] = v
		}
	}
	ack, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: "tasks.f", Header: toTasks, Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	tasks, _ := e.js.Stream(ctx, "TASKS")
	raw, err := tasks.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range forged {
		if raw.Header.Get(k) == "" {
			raw.Header[k] = v
		}
	}
	rec := dlq.NewRecord(1, "real", dlq.ClassTransient, 503, time.Millisecond, time.Now(), "w1", errString("503"))
	s, err := w.Store(ctx, &dlq.Entry{ID: "f1", Type: "f", Subject: raw.Subject, Seq: raw.Sequence, Header: raw.Header,
		Payload: raw.Data, Reason: dlq.Exhausted, Err: errString("boom"), Attempts: 2, Backends: []string{"real"},
		History: []dlq.Record{rec}})
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	d, _ := e.js.Stream(ctx, "DLQ")
	m, err := d.GetMsg(ctx, s.Seq)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Dlq-Reason": "exhausted", "Dlq-Replays": "0", "Dlq-Error": "boom", "Dlq-Worker": "w1",
		"Dlq-Original-Seq": fmt.Sprint(raw.Sequence), "Dlq-Attempts": "2", "Dlq-Payload-Object": "",
		"Dlq-Payload-Size": "", "Dlq-History-Dropped": "", "Dlq-Original-Msg-Id": "",
		"Nats-Msg-Id": fmt.Sprint("dlq-TASKS-", raw.Sequence),
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for k := range m.Header {
		if lk := strings.ToLower(k); lk == "dlq-reason" && k != "Dlq-Reason" || lk == "dlq-attempts" && k != "Dlq-Attempts" ||
			strings.HasPrefix(lk, "nats-") && k != "Nats-Msg-Id" {
			t.Errorf("forged header %s kept", k)
		}
	}
	if recs, err := dlq.DecodeHistory(m.Header.Get(dlq.HeaderHistory)); err != nil || len(recs) != 1 || recs[0].Backend != "real" {
		t.Errorf("history %v (%v), want the real record alone", recs, err)
	}
	if string(m.Data) != "x" {
		t.Errorf("body %q", m.Data)
	}
}

// Two different tasks that reuse one Nats-Msg-Id (TASKS took both, its
// duplicate window having passed) are two DLQ entries; the same task
// dead-lettered again is a duplicate, and a success.
func TestReusedMsgIDBothDeadLettered(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tasks, err := e.js.Stream(ctx, "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	cfg := tasks.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	first, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: "tasks.r", Header: nats.Header{"Task-Id": {"one"}}, Data: []byte("1")},
		jetstream.WithMsgID("reused"))
	if err != nil {
		t.Fatal(err)
	}
	var second *jetstream.PubAck
	testkit.Eventually(t, 10*time.Second, "TASKS to take the reused id again", func() (bool, string) {
		second, err = e.js.PublishMsg(ctx, &nats.Msg{Subject: "tasks.r", Header: nats.Header{"Task-Id": {"two"}}, Data: []byte("2")},
			jetstream.WithMsgID("reused"))
		return err == nil && !second.Duplicate, ""
	})
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	var stored []dlq.Stored
	for _, seq := range []uint64{first.Sequence, second.Sequence, first.Sequence} {
		raw, err := tasks.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		s, err := w.Store(ctx, &dlq.Entry{ID: raw.Header.Get("Task-Id"), Type: "r", Subject: raw.Subject, Seq: seq,
			Header: raw.Header, Payload: raw.Data, Reason: dlq.Rejected})
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, s)
	}
	if stored[0].Duplicate || stored[1].Duplicate || stored[0].Seq == stored[1].Seq {
		t.Fatalf("the two tasks: %+v, %+v; want two new entries", stored[0], stored[1])
	}
	if !stored[2].Duplicate || stored[2].Seq != stored[0].Seq {
		t.Fatalf("the first task again: %+v; want a duplicate of entry %d", stored[2], stored[0].Seq)
	}
	if n := e.count(t, "DLQ"); n != 2 {
		t.Fatalf("DLQ holds %d, want 2", n)
	}
	d, _ := e.js.Stream(ctx, "DLQ")
	for k, want := range []string{"one", "two"} {
		m, err := d.GetMsg(ctx, stored[k].Seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Task-Id") != want || m.Header.Get("Dlq-Original-Msg-Id") != "reused" {
			t.Errorf("entry %d: Task-Id %q, original id %q", stored[k].Seq, m.Header.Get("Task-Id"), m.Header.Get("Dlq-Original-Msg-Id"))
		}
	}
}

func TestRecords(t *testing.T) {
	at := time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)
	secret := errors.New("GET https://api/x?api_key=k3y: refused")
	attempts := []resilience.Attempt{
		{Backend: "a", Start: at, Duration: 1500 * time.Microsecond, Err: &handlers.Error{Class: handlers.ErrTransient, Status: 503, Err: secret}},
		{Backend: "b", Start: at.Add(time.Second), Duration: time.Millisecond, Err: &handlers.Error{Class: handlers.ErrPermanent, Status: 422}},
		{Backend: "c", Start: at.Add(2 * time.Second), Duration: time.Millisecond, Err: fmt.Errorf("check: %w", resilience.ErrInvalidResult)},
		{Backend: "d", Start: at.Add(3 * time.Second), Duration: time.Millisecond},
		{Backend: "e", Start: at.Add(4 * time.Second), Duration: time.Millisecond, Err: errors.New("unclassified")},
	}
	want := []struct {
		class  dlq.Class
		status int
	}{{"transient", 503}, {"permanent", 422}, {"invalid", 0}, {"ok", 0}, {"transient", 0}}
	got := dlq.Records(attempts, 3, "w9")
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for k, w := range want {
		r := got[k]
		if r.Class != w.class || r.Status != w.status || r.Delivery != 3 || r.Worker != "w9" ||
			r.Backend != attempts[k].Backend || !r.At.Equal(attempts[k].Start) {
			t.Errorf("record %d = %+v, want class %s status %d", k, r, w.class, w.status)
		}
	}
	if got[0].Duration != "1.5ms" || strings.Contains(got[0].Error, "k3y") || !strings.Contains(got[0].Error, "api_key=REDACTED") {
		t.Errorf("record 0 duration %q, error %q", got[0].Duration, got[0].Error)
	}
}
