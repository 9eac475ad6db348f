package dlq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/internal/testkit"
)

const smallMaxPayload = 64 << 10

// newSmallEnv is newEnv on a server whose max_payload is 64 KiB.
func newSmallEnv(t testing.TB) *env {
	t.Helper()
	e := streams(t, testkit.StartServer(t, testkit.MaxPayload(smallMaxPayload)))
	if e.nc.MaxPayload() != smallMaxPayload {
		t.Fatalf("max payload %d", e.nc.MaxPayload())
	}
	return e
}

// history makes n records, about 230 bytes of JSON each.
func history(n int) []dlq.Record {
	recs := make([]dlq.Record, n)
	for i := range recs {
		recs[i] = dlq.NewRecord(i/3+1, "svc", dlq.ClassTransient, 503, time.Millisecond, time.Now(), "worker-1",
			errString(fmt.Sprintf("attempt %d: status 503: upstream overloaded, retry later, at length, at length", i)))
	}
	return recs
}

// A task near the server's max_payload is dead-lettered whatever the size
// of its copy: the history is trimmed first, then the payload moves to the
// payloads bucket, and the payload comes back unchanged.
func TestNearMaxPayload(t *testing.T) {
	e := newSmallEnv(t)
	ctx := context.Background()
	w, err := dlq.EnsureWriter(ctx, e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w1", MaxPayload: e.nc.MaxPayload()})
	if err != nil {
		t.Fatal(err)
	}
	tasks, _ := e.js.Stream(ctx, "TASKS")
	d, _ := e.js.Stream(ctx, "DLQ")
	tests := []struct {
		name       string
		size       int
		wantObject bool
		wantKept   string // all, some or none of the history
	}{
		{"small: as is", 1 << 10, false, "all"},
		{"room for part of the history", smallMaxPayload - 4<<10, false, "some"},
		{"room for the DLQ headers alone", smallMaxPayload - 300, false, "none"},
		{"no room for the DLQ headers", smallMaxPayload - 200, true, "all"},
		{"at the limit with its own header", smallMaxPayload - 100, true, "all"},
	}
	for k, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := bytes.Repeat([]byte{byte('a' + k)}, tt.size)
			id := fmt.Sprint("big", k)
			ack, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: "tasks.big", Header: nats.Header{"Task-Id": {id}}, Data: payload})
			if err != nil {
				t.Fatalf("the task itself: %v", err)
			}
			raw, err := tasks.GetMsg(ctx, ack.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			recs := history(25) // within MaxHistoryLen
			s, err := w.Store(ctx, &dlq.Entry{ID: id, Type: "big", Subject: raw.Subject, Seq: raw.Sequence, Header: raw.Header,
				Payload: raw.Data, Reason: dlq.InvalidResult, Err: errString("result too large"), Attempts: 25, History: recs})
			if err != nil {
				t.Fatalf("Store: %v", err)
			}
			m, err := d.GetMsg(ctx, s.Seq)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get(dlq.HeaderPayloadObject) != ""; got != tt.wantObject || (s.PayloadObject != "") != tt.wantObject {
				t.Fatalf("payload object %q (stored %q), want one: %v", m.Header.Get(dlq.HeaderPayloadObject), s.PayloadObject, tt.wantObject)
			}
			if tt.wantObject {
				if len(m.Data) != 0 || m.Header.Get(dlq.HeaderPayloadSize) != fmt.Sprint(tt.size) ||
					s.PayloadObject != fmt.Sprint("dlq-TASKS-", raw.Sequence) {
					t.Errorf("entry body %d bytes, size %q, object %q", len(m.Data), m.Header.Get(dlq.HeaderPayloadSize), s.PayloadObject)
				}
			}
			kept, err := dlq.DecodeHistory(m.Header.Get(dlq.HeaderHistory))
			if err != nil {
				t.Fatal(err)
			}
			dropped := 0
			if v := m.Header.Get(dlq.HeaderHistoryDropped); v != "" {
				dropped = atoi(t, v)
			}
			if len(kept)+dropped != len(recs) || dropped != s.HistoryDropped {
				t.Errorf("history: %d kept + %d dropped (stored says %d), want %d", len(kept), dropped, s.HistoryDropped, len(recs))
			}
			kind := "some"
			switch {
			case dropped == 0:
				kind = "all"
			case len(kept) == 0:
				kind = "none"
			}
			if kind != tt.wantKept {
				t.Errorf("history kept %d, dropped %d; want %s kept", len(kept), dropped, tt.wantKept)
			}
			if len(kept) > 0 && kept[len(kept)-1] != recs[len(recs)-1] {
				t.Error("the most recent attempt was not kept")
			}
			got, err := dlq.LoadPayload(ctx, e.js, e.topo, m.Header, m.Data)
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("LoadPayload: %d bytes, %v; want the %d original bytes", len(got), err, len(payload))
			}
			// Purge order: the entry, then its object.
			if err := d.DeleteMsg(ctx, s.Seq); err != nil {
				t.Fatal(err)
			}
			if err := dlq.DeletePayload(ctx, e.js, e.topo, m.Header); err != nil {
				t.Fatal(err)
			}
			if _, err := dlq.LoadPayload(ctx, e.js, e.topo, m.Header, m.Data); tt.wantObject && !errors.Is(err, dlq.ErrPayloadMissing) {
				t.Errorf("after DeletePayload: %v, want ErrPayloadMissing", err)
			}
		})
	}
}

// Without MaxPayload the writer learns the limit from the client's
// refusal and sends the smallest copy; without Payloads a copy that needs
// them is ErrTooLarge (the task stays in TASKS for a later try).
func TestNearMaxPayloadLimitUnknown(t *testing.T) {
	e := newSmallEnv(t)
	ctx := context.Background()
	payload := bytes.Repeat([]byte("z"), smallMaxPayload-100)
	entry := &dlq.Entry{ID: "u1", Type: "big", Subject: "tasks.big", Seq: 77, Payload: payload, Reason: dlq.Exhausted, History: history(5)}
	bare := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, MaxPayload: smallMaxPayload})
	if err := bare.Write(ctx, entry); !errors.Is(err, dlq.ErrTooLarge) {
		t.Fatalf("without Payloads: %v, want ErrTooLarge", err)
	}
	w, err := dlq.EnsureWriter(ctx, e.js, dlq.WriterOptions{Topology: e.topo})
	if err != nil {
		t.Fatal(err)
	}
	s, err := w.Store(ctx, entry)
	if err != nil || s.PayloadObject != "dlq-TASKS-77" {
		t.Fatalf("Store = %+v, %v; want the payload in dlq-TASKS-77", s, err)
	}
	d, _ := e.js.Stream(ctx, "DLQ")
	m, err := d.GetMsg(ctx, s.Seq)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dlq.OpenPayloads(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Payload(ctx, m.Header, m.Data); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("Payload: %d bytes, %v", len(got), err)
	}
	// A retried dead-letter of the same task: a duplicate, the object kept.
	if s2, err := w.Store(ctx, entry); err != nil || !s2.Duplicate || s2.Seq != s.Seq {
		t.Fatalf("again: %+v, %v; want a duplicate of %d", s2, err, s.Seq)
	}
	if got, err := p.Payload(ctx, m.Header, m.Data); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("Payload after the retry: %d bytes, %v", len(got), err)
	}
}

func TestPayloadOfPlainEntry(t *testing.T) {
	var none *dlq.Payloads
	got, err := none.Payload(context.Background(), nats.Header{}, []byte("inline"))
	if err != nil || string(got) != "inline" {
		t.Fatalf("Payload = %q, %v", got, err)
	}
	_, err = none.Payload(context.Background(), nats.Header{dlq.HeaderPayloadObject: {"x"}}, nil)
	if !errors.Is(err, dlq.ErrPayloadMissing) {
		t.Fatalf("no bucket: %v, want ErrPayloadMissing", err)
	}
	if err := none.Delete(context.Background(), nats.Header{dlq.HeaderPayloadObject: {"x"}}); err != nil {
		t.Fatal(err)
	}
}

// An entry whose payload lives in the payloads bucket gives it back to
// show (Get) and replay, and purging the entry removes the object too.
func TestAdminGivesBackObjectPayload(t *testing.T) {
	e := newSmallEnv(t)
	ctx := context.Background()
	w, err := dlq.EnsureWriter(ctx, e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w1", MaxPayload: e.nc.MaxPayload()})
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("z"), smallMaxPayload-100)
	s, err := w.Store(ctx, &dlq.Entry{ID: "huge", Type: "big", Subject: "tasks.big", Seq: 7,
		Header: nats.Header{"Task-Id": {"huge"}}, Payload: payload, Reason: dlq.InvalidResult, Err: errString("too large")})
	if err != nil {
		t.Fatal(err)
	}
	if s.PayloadObject == "" {
		t.Fatal("payload not moved to the object store")
	}
	a, err := dlq.NewAdmin(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	i, err := a.Get(ctx, s.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(i.Data, payload) {
		t.Fatalf("Get: payload of %d bytes, want %d", len(i.Data), len(payload))
	}
	sub, err := e.nc.SubscribeSync("tasks.big")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := a.ReplayOne(ctx, i); err != nil || out != dlq.Replayed {
		t.Fatalf("ReplayOne: %v, %v", out, err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data, payload) || m.Header.Get("Dlq-Payload-Object") != "" {
		t.Fatalf("replayed %d bytes with headers %v", len(m.Data), m.Header)
	}
	if _, err := dlq.LoadPayload(ctx, e.js, e.topo, i.Header, nil); !errors.Is(err, dlq.ErrPayloadMissing) {
		t.Errorf("payload object after the entry's removal: got %v, want ErrPayloadMissing", err)
	}
}
