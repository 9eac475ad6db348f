package task_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/task"
)

func hdr(kv ...string) nats.Header {
	h := nats.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParse(t *testing.T) {
	deadline := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		typ        string
		give       nats.Header
		payload    int
		maxPayload int
		wantID     string
		wantPoison bool
		check      func(t *testing.T, got *task.Task)
	}{
		{name: "task id wins", typ: "echo", give: hdr("Task-Id", "a1", "Nats-Msg-Id", "m1"), wantID: "a1"},
		{name: "msg id next", typ: "echo", give: hdr("Nats-Msg-Id", "m_1-x"), wantID: "m_1-x"},
		{name: "sequence last", typ: "echo", give: hdr(), wantID: "42"},
		{name: "nil header", typ: "echo", give: nil, wantID: "42"},
		{name: "id with dot is poison", typ: "echo", give: hdr("Task-Id", "a.b"), wantID: "42", wantPoison: true},
		{name: "id with space is poison", typ: "echo", give: hdr("Nats-Msg-Id", "a b"), wantID: "42", wantPoison: true},
		{name: "id too long", typ: "echo", give: hdr("Task-Id", strings.Repeat("a", 129)), wantID: "42", wantPoison: true},
		{name: "id at limit", typ: "echo", give: hdr("Task-Id", strings.Repeat("a", 128)), wantID: strings.Repeat("a", 128)},
		{name: "no type", typ: "", give: hdr("Task-Id", "a"), wantPoison: true},
		{name: "deadline", typ: "echo", give: hdr("Task-Deadline", "2026-11-22T10:00:00Z"), wantID: "42",
			check: func(t *testing.T, got *task.Task) {
				if !got.Deadline.Equal(deadline) {
					t.Errorf("deadline: got %v, want %v", got.Deadline, deadline)
				}
				if !got.Expired(deadline) || got.Expired(deadline.Add(-time.Nanosecond)) {
					t.Error("Expired does not flip at the deadline")
				}
			}},
		{name: "bad deadline", typ: "echo", give: hdr("Task-Deadline", "tomorrow"), wantID: "42", wantPoison: true},
		{name: "reply to", typ: "echo", give: hdr("Task-Reply-To", "_INBOX.x.y"), wantID: "42",
			check: func(t *testing.T, got *task.Task) {
				if got.ReplyTo != "_INBOX.x.y" {
					t.Errorf("reply to: got %q", got.ReplyTo)
				}
			}},
		{name: "wildcard reply to", typ: "echo", give: hdr("Task-Reply-To", "_INBOX.*"), wantID: "42", wantPoison: true},
		{name: "empty reply to is none", typ: "echo", give: hdr("Task-Reply-To", ""), wantID: "42"},
		{name: "reply to twice", typ: "echo", give: hdr("Task-Reply-To", "_INBOX.a", "Task-Reply-To", "_INBOX.b"), wantID: "42", wantPoison: true},
		{name: "reply to the JetStream API", typ: "echo", give: hdr("Task-Reply-To", "$JS.API.STREAM.DELETE.DLQ"), wantID: "42", wantPoison: true},
		{name: "reply to a KV bucket", typ: "echo", give: hdr("Task-Reply-To", "$KV.RESULT_CACHE.x"), wantID: "42", wantPoison: true},
		{name: "reply outside the allow-list", typ: "echo", give: hdr("Task-Reply-To", "my.inbox"), wantID: "42", wantPoison: true},
		{name: "bad id and allowed reply", typ: "echo", give: hdr("Task-Id", "a.b", "Task-Reply-To", "_INBOX.q"), wantID: "42", wantPoison: true,
			check: func(t *testing.T, got *task.Task) {
				if got.ReplyTo != "_INBOX.q" {
					t.Errorf("reply to: got %q, want the caller told of the poison", got.ReplyTo)
				}
			}},
		{name: "refused reply keeps the id", typ: "echo", give: hdr("Task-Id", "job-1", "Task-Reply-To", "$SYS.REQ.SERVER.PING"), wantID: "job-1", wantPoison: true,
			check: func(t *testing.T, got *task.Task) {
				if got.ReplyTo != "" {
					t.Errorf("reply to: got %q, want none (refused)", got.ReplyTo)
				}
			}},
		{name: "no-cache", typ: "echo", give: hdr("Cache-Control", "max-age=0, No-Cache"), wantID: "42",
			check: func(t *testing.T, got *task.Task) {
				if !got.NoCache {
					t.Error("NoCache: got false, want true")
				}
			}},
		{name: "payload over limit", typ: "echo", give: hdr(), payload: 11, maxPayload: 10, wantID: "42", wantPoison: true},
		{name: "payload at limit", typ: "echo", give: hdr(), payload: 10, maxPayload: 10, wantID: "42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := task.Parse("tasks."+tt.typ, tt.typ, tt.give, make([]byte, tt.payload), 42, task.ParseOptions{MaxPayload: tt.maxPayload})
			if gotPoison := errors.Is(err, task.ErrPoison); gotPoison != tt.wantPoison {
				t.Fatalf("poison: got %v (err %v), want %v", gotPoison, err, tt.wantPoison)
			}
			if err != nil && !tt.wantPoison {
				t.Fatalf("unexpected error %v", err)
			}
			if got == nil {
				t.Fatal("Parse returned a nil task")
			}
			if tt.typ != "" && got.ID != tt.wantID {
				t.Errorf("id: got %q, want %q", got.ID, tt.wantID)
			}
			if got.Seq != 42 || got.Type != tt.typ {
				t.Errorf("seq/type: got %d/%q", got.Seq, got.Type)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

var fuzzRules = func() *task.ReplyRules {
	r, err := task.NewReplyRules([]string{"_INBOX.>", "app.*.reply"}, []string{"tasks.>", "breakwater.>"})
	if err != nil {
		panic(err)
	}
	return r
}()

func FuzzParse(f *testing.F) {
	f.Add("echo", "a1", "", "", "0*", []byte("x"))
	f.Add("echo", "a1", "", "", "app.x.reply", []byte("x"))
	f.Add("echo", "a1", "", "", "", []byte("x"))
	f.Add("code.generate", "", "m1", "2026-01-02T03:04:05Z", "_INBOX.a", []byte{})
	f.Add("x", "a.b", "", "garbage", "a..b", []byte("{}"))
	f.Fuzz(func(t *testing.T, typ, id, msgID, deadline, replyTo string, payload []byte) {
		h := hdr("Task-Id", id, "Nats-Msg-Id", msgID, "Task-Deadline", deadline, "Task-Reply-To", replyTo)
		got, err := task.Parse("tasks."+typ, typ, h, payload, 7, task.ParseOptions{MaxPayload: 64, Reply: fuzzRules})
		if got == nil {
			t.Fatal("nil task")
		}
		if err != nil {
			if !errors.Is(err, task.ErrPoison) {
				t.Fatalf("error does not wrap ErrPoison: %v", err)
			}
			return
		}
		// A task that parses has an id that is safe as a subject token.
		if task.ValidID(got.ID) != nil {
			t.Fatalf("accepted invalid id %q", got.ID)
		}
		if got.ReplyTo != "" && fuzzRules.Check(got.ReplyTo) != nil {
			t.Fatalf("accepted refused reply-to %q", got.ReplyTo)
		}
		if got.ReplyTo == "" && replyTo != "" {
			t.Fatalf("reply-to %q dropped without an error", replyTo)
		}
	})
}

func TestFiring(t *testing.T) {
	at := time.Unix(1764626400, 0)
	tests := []struct {
		name, scheduler, wantID string
		wantPoison              bool
	}{
		{"periodic firing", "schedules.every.nightly", "nightly-1764626400", false},
		{"prefixed", "acme.schedules.every.nightly", "42", false}, // another prefix: not ours
		{"delayed task keeps its id", "schedules.once.job-1", "42", false},
		{"not fired", "", "42", false},
		{"name that makes no id", "schedules.every.a+b", "42", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hdr()
			if tt.scheduler != "" {
				h.Set("Nats-Scheduler", tt.scheduler)
			}
			got, err := task.Parse("tasks.echo", "echo", h, nil, 42, task.ParseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			err = got.Firing("schedules.every.", at)
			if gotPoison := errors.Is(err, task.ErrPoison); gotPoison != tt.wantPoison {
				t.Fatalf("poison: got %v (%v), want %v", gotPoison, err, tt.wantPoison)
			}
			if got.ID != tt.wantID {
				t.Errorf("id: got %q, want %q", got.ID, tt.wantID)
			}
		})
	}
}

func TestFired(t *testing.T) {
	for _, c := range []struct {
		name               string
		header             map[string]string
		periodic, wantFire bool
	}{
		{"published", map[string]string{}, false, false},
		{"delayed", map[string]string{"Nats-Scheduler": "schedules.once.a", "Nats-Schedule-Next": "purge"}, false, true},
		{"periodic", map[string]string{"Nats-Scheduler": "schedules.every.b", "Nats-Schedule-Next": "2026-12-02T06:00:01Z"}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tk := &task.Task{Header: nats.Header{}}
			for k, v := range c.header {
				tk.Header.Set(k, v)
			}
			periodic, fired := tk.Fired()
			if periodic != c.periodic || fired != c.wantFire {
				t.Errorf("Fired() = %v, %v; want %v, %v", periodic, fired, c.periodic, c.wantFire)
			}
		})
	}
	at := time.Date(2026, 12, 2, 6, 0, 1, 730_000_000, time.UTC)
	if got, want := task.Due(at), time.Date(2026, 12, 2, 6, 0, 1, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Due(%s) = %s, want %s", at, got, want)
	}
}
