package task

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrPoison is wrapped by every error about a task that can never be
// processed as published (bad id, unparsable header, payload too large).
// Such a task is dead-lettered at once, never retried.
var ErrPoison = errors.New("poison task")

// Task is a parsed task request.
type Task struct {
	ID       string
	Type     string
	Subject  string      // the subject it was published to
	Payload  []byte      // opaque; passed to the backend as is
	Header   nats.Header // the original headers, unmodified
	ReplyTo  string      // Task-Reply-To, or ""
	Deadline time.Time   // Task-Deadline, or zero
	NoCache  bool        // Cache-Control: no-cache
	Seq      uint64      // stream sequence in TASKS
}

// ParseOptions bound what Parse accepts.
type ParseOptions struct {
	// MaxPayload rejects larger payloads as poison; 0 means no limit
	// beyond the server's own.
	MaxPayload int
}

// Parse builds a Task from a message of type typ (the subject's tail after
// "tasks.") stored at stream sequence seq. The task id is Task-Id, else
// Nats-Msg-Id, else the sequence. Errors wrap ErrPoison; the returned Task is
// filled as far as parsing got (at least Type, Subject, Payload, Header,
// Seq, and ID when readable) so that it can be dead-lettered with a reason.
func Parse(subject, typ string, header nats.Header, payload []byte, seq uint64, o ParseOptions) (*Task, error) {
	t := &Task{Type: typ, Subject: subject, Payload: payload, Header: header, Seq: seq}
	if typ == "" {
		return t, fmt.Errorf("%w: subject %q has no task type", ErrPoison, subject)
	}
	id := header.Get(HeaderID)
	src := HeaderID
	if id == "" {
		id, src = header.Get(HeaderMsgID), HeaderMsgID
	}
	if id == "" {
		id, src = strconv.FormatUint(seq, 10), "sequence"
	}
	if err := ValidID(id); err != nil {
		t.ID = strconv.FormatUint(seq, 10)
		return t, fmt.Errorf("%w: %s: %w", ErrPoison, src, err)
	}
	t.ID = id
	if o.MaxPayload > 0 && len(payload) > o.MaxPayload {
		return t, fmt.Errorf("%w: payload of %d bytes exceeds the limit of %d", ErrPoison, len(payload), o.MaxPayload)
	}
	if v := header.Get(HeaderDeadline); v != "" {
		d, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return t, fmt.Errorf("%w: %s %q is not RFC 3339", ErrPoison, HeaderDeadline, v)
		}
		t.Deadline = d
	}
	if v := header.Get(HeaderReplyTo); v != "" {
		if !ValidSubject(v) {
			return t, fmt.Errorf("%w: %s %q is not a valid subject", ErrPoison, HeaderReplyTo, v)
		}
		t.ReplyTo = v
	}
	for _, v := range header.Values(HeaderCacheControl) {
		for _, d := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), "no-cache") {
				t.NoCache = true
			}
		}
	}
	return t, nil
}

// Expired reports whether the task's deadline has passed at now.
func (t *Task) Expired(now time.Time) bool {
	return !t.Deadline.IsZero() && !now.Before(t.Deadline)
}

// ValidID reports why id is not a subject-safe task id
// ([A-Za-z0-9_-], 1 to MaxIDLen bytes), or nil.
func ValidID(id string) error {
	if id == "" {
		return errors.New("empty task id")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("task id of %d bytes exceeds %d", len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("task id %q has %q; allowed are A-Z a-z 0-9 _ -", id, c)
		}
	}
	return nil
}

// ValidSubject reports whether s is a subject one can publish to:
// non-empty tokens, no wildcards, no whitespace, at most 4 KiB.
func ValidSubject(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		if strings.ContainsAny(tok, " \t\r\n") {
			return false
		}
	}
	return true
}
