package task_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/breakwater/breakwater/task"
)

func TestSubjectMatches(t *testing.T) {
	tests := []struct {
		subject, pattern string
		want             bool
	}{
		{"_INBOX.abc", "_INBOX.>", true},
		{"_INBOX.abc.def", "_INBOX.>", true},
		{"_INBOX", "_INBOX.>", false},
		{"_INBOXX.a", "_INBOX.>", false},
		{"a.b.c", "a.*.c", true},
		{"a.b.c", "a.*", false},
		{"a.b", "a.*.c", false},
		{"a.b", "a.b", true},
		{"a.b", "A.b", false}, // case-sensitive
		{"a.b.c", ">", true},
		{"a", ">", true},
		{"a.b*", "a.b", false}, // a wildcard inside a token is literal
		{"a.b*", "a.*", true},
		{"$JS.API.STREAM.DELETE.DLQ", "$JS.>", true},
		{"$js.API.STREAM.DELETE.DLQ", "$JS.>", false},
		{"breakwater.all.route.pause", "breakwater.>", true},
	}
	for _, tt := range tests {
		if got := task.SubjectMatches(tt.subject, tt.pattern); got != tt.want {
			t.Errorf("SubjectMatches(%q, %q): got %v, want %v", tt.subject, tt.pattern, got, tt.want)
		}
	}
}

func TestValidSubjectAndPattern(t *testing.T) {
	tests := []struct {
		give                 string
		wantSubject, wantPat bool
	}{
		{"_INBOX.a", true, true},
		{"a", true, true},
		{"0*", true, false},
		{"a.b>", true, false},
		{"a.*", false, true},
		{"a.>", false, true},
		{">", false, true},
		{"a.>.b", false, false},
		{"a..b", false, false},
		{".a", false, false},
		{"a.", false, false},
		{"", false, false},
		{"a b", false, false},
		{"a\tb", false, false},
		{"a\x00b", false, false},
		{"a\x7fb", false, false},
		{"a.\xff", false, false},
	}
	for _, tt := range tests {
		if got := task.ValidSubject(tt.give); got != tt.wantSubject {
			t.Errorf("ValidSubject(%q): got %v, want %v", tt.give, got, tt.wantSubject)
		}
		if got := task.ValidPattern(tt.give); got != tt.wantPat {
			t.Errorf("ValidPattern(%q): got %v, want %v", tt.give, got, tt.wantPat)
		}
	}
}

func TestReplyRules(t *testing.T) {
	own := []string{"tasks.>", "results.>", "dlq.>", "health.>", "schedules.>", "breakwater.>"}
	open, err := task.NewReplyRules([]string{">"}, own)
	if err != nil {
		t.Fatal(err)
	}
	custom, err := task.NewReplyRules([]string{"_INBOX.>", "app.*.replies"}, own)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		rules   *task.ReplyRules
		subject string
		allowed bool
	}{
		{"default inbox", nil, "_INBOX.x.y", true},
		{"default other", nil, "my.inbox", false},
		{"default JS API", nil, "$JS.API.STREAM.DELETE.DLQ", false},
		{"open JS API", open, "$JS.API.STREAM.PURGE.RESULTS", false},
		{"open KV", open, "$KV.DLQ_HISTORY.1", false},
		{"open object store", open, "$O.DLQ_PAYLOADS.C.x", false},
		{"open system", open, "$SYS.REQ.SERVER.PING", false},
		{"open micro", open, "$SRV.PING", false},
		{"open admin plane", open, "breakwater.all.route.pause", false},
		{"open tasks", open, "tasks.echo", false},
		{"open results", open, "results.echo.1", false},
		{"open dlq", open, "dlq.echo", false},
		{"open health", open, "health.worker.w1", false},
		{"open schedules", open, "schedules.every.x", false},
		{"open anything else", open, "my.inbox", true},
		{"custom pattern", custom, "app.billing.replies", true},
		{"custom pattern too deep", custom, "app.billing.x.replies", false},
		{"wildcard subject", open, "my.*", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rules.Check(tt.subject)
			if (err == nil) != tt.allowed {
				t.Fatalf("Check(%q): got %v, want allowed=%v", tt.subject, err, tt.allowed)
			}
			if err != nil && !errors.Is(err, task.ErrReplyRefused) {
				t.Fatalf("error does not wrap ErrReplyRefused: %v", err)
			}
		})
	}
	if _, err := task.NewReplyRules([]string{"a.>.b"}, nil); err == nil {
		t.Error("NewReplyRules accepted the pattern a.>.b")
	}
}

// The matcher must agree with the server's own: a reply subject the worker
// thinks it refuses must be one the server would route there.
func FuzzSubjectMatches(f *testing.F) {
	f.Add("_INBOX.a.b", "_INBOX.>")
	f.Add("a.b.c", "a.*.c")
	f.Add("a.b*", "a.*")
	f.Add("$JS.API.X", "$JS.>")
	f.Fuzz(func(t *testing.T, subject, pattern string) {
		if !task.ValidSubject(subject) {
			return
		}
		if !server.IsValidPublishSubject(subject) {
			t.Fatalf("ValidSubject(%q) but the server refuses it", subject)
		}
		if !task.ValidPattern(pattern) {
			return
		}
		if !server.IsValidSubject(pattern) {
			t.Fatalf("ValidPattern(%q) but the server refuses it", pattern)
		}
		got, want := task.SubjectMatches(subject, pattern), server.SubjectMatchesFilter(subject, pattern)
		if got != want {
			t.Fatalf("SubjectMatches(%q, %q): got %v, server says %v", subject, pattern, got, want)
		}
	})
}
