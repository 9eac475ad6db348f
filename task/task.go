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
	// Reply decides which Task-Reply-To subjects are answered; a refused
	// one makes the task poison. Nil: only DefaultReplySubjects, never
	// NeverReply.
	Reply *ReplyRules
}

// Parse builds a Task from a message of type typ (the subject's tail after
// "tasks.") stored at stream sequence seq. The task id is Task-Id, else
// Nats-Msg-Id, else the sequence (also when the task's own id is not
// subject-safe). Errors wrap ErrPoison, and ErrReplyRefused for a
// Task-Reply-To that o.Reply refuses; the returned Task is filled as far as
// parsing got (at least Type, Subject, Payload, Header, Seq and ID) so that
// it can be dead-lettered with a reason. Task-Reply-To is checked first, so
// a task that is poison for another reason still has ReplyTo set when the
// caller may be answered, and never when it may not.
func Parse(subject, typ string, header nats.Header, payload []byte, seq uint64, o ParseOptions) (*Task, error) {
	t := &Task{Type: typ, Subject: subject, Payload: payload, Header: header, Seq: seq}
	id := header.Get(HeaderID)
	src := HeaderID
	if id == "" {
		id, src = header.Get(HeaderMsgID), HeaderMsgID
	}
	if id == "" {
		id, src = strconv.FormatUint(seq, 10), "sequence"
	}
	idErr := ValidID(id)
	if idErr != nil {
		id = strconv.FormatUint(seq, 10)
	}
	t.ID = id
	// An empty Task-Reply-To is no reply-to at all (as Get reads it).
	if v := header.Values(HeaderReplyTo); len(v) > 1 || len(v) == 1 && v[0] != "" {
		if len(v) > 1 {
			return t, fmt.Errorf("%w: %s: %w: given %d times", ErrPoison, HeaderReplyTo, ErrReplyRefused, len(v))
		}
		if err := o.Reply.Check(v[0]); err != nil {
			return t, fmt.Errorf("%w: %s: %w", ErrPoison, HeaderReplyTo, err)
		}
		t.ReplyTo = v[0]
	}
	if typ == "" {
		return t, fmt.Errorf("%w: subject %q has no task type", ErrPoison, subject)
	}
	if idErr != nil {
		return t, fmt.Errorf("%w: %s: %w", ErrPoison, src, idErr)
	}
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

// HeaderScheduler is set by the server on a message its scheduler fired:
// the subject of the schedule message that fired it.
const HeaderScheduler = "Nats-Scheduler"

// Firing gives a task fired by a periodic schedule its own id: the server
// copies the schedule message's headers into every firing, so each one
// would otherwise carry the same id. everyPrefix is the subject prefix of
// periodic schedules (schedules.every., with the topology's prefix); a
// task fired from <everyPrefix><name> at firedAt (its stream timestamp)
// gets the id <name>-<unix seconds>. Other tasks are left alone. The error,
// wrapping ErrPoison, is for a schedule name that makes no valid id.
func (t *Task) Firing(everyPrefix string, firedAt time.Time) error {
	name, ok := strings.CutPrefix(t.Header.Get(HeaderScheduler), everyPrefix)
	if !ok || everyPrefix == "" {
		return nil
	}
	id := name + "-" + strconv.FormatInt(firedAt.Unix(), 10)
	if err := ValidID(id); err != nil {
		return fmt.Errorf("%w: fired by %s%s: %w", ErrPoison, everyPrefix, name, err)
	}
	t.ID = id
	return nil
}

// headerScheduleNext is set by the server on a fired message: the next
// firing of a periodic schedule, or "purge" for a delayed task's only one.
const headerScheduleNext = "Nats-Schedule-Next"

// Fired reports whether the server's scheduler fired t (ok), and whether
// from a periodic schedule (interval or cron) rather than a delayed task.
func (t *Task) Fired() (periodic, ok bool) {
	if t.Header.Get(HeaderScheduler) == "" {
		return false, false
	}
	return t.Header.Get(headerScheduleNext) != "purge", true
}

// Due is when the server was due to fire a task it stored at storedAt.
// The server fires on whole seconds (@at takes RFC 3339 seconds, @every is
// rounded to the second, cron counts seconds) and, measured, within a
// second of the due time, so the due time is storedAt's second. A
// firing more than a second late is under-reported by whole seconds.
func Due(storedAt time.Time) time.Time { return storedAt.Truncate(time.Second) }
