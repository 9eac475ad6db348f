package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/task"
)

// State is where a task is.
type State string

// The states Status reports, in the order a task passes them.
const (
	Scheduled    State = "scheduled"     // a delayed task waiting for its time
	Pending      State = "pending"       // in TASKS, not started
	Running      State = "running"       // a worker calls its backend now
	Done         State = "done"          // its result is stored
	DeadLettered State = "dead-lettered" // in the DLQ
	Unknown      State = "unknown"       // none of these (or its result expired)
)

// Status says where task Type/ID is. Which fields are set depends on
// State.
type Status struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	State State  `json:"state"`
	// Scheduled: when it runs.
	At time.Time `json:"at,omitzero"`
	// Pending: its place among the tasks of its type in TASKS (1: the
	// next) and how many there are; Seq is its sequence in TASKS.
	Position int `json:"position,omitempty"`
	Of       int `json:"of,omitempty"`
	// Running: the worker and since when.
	Worker string    `json:"worker,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	// Done: the result's Task-Backend, Task-Duration, Task-Attempts and
	// body (Result, not in JSON: the CLI decides how to print it).
	Backend  string `json:"backend,omitempty"`
	Duration string `json:"duration,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	Result   []byte `json:"-"`
	// Dead-lettered: Dlq-Reason, Dlq-Error and the entry's DLQ sequence.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// Seq is the task's sequence in TASKS (pending, scheduled) or the
	// DLQ entry's (dead-lettered).
	Seq uint64 `json:"seq,omitempty"`
	// Stored is when the schedule, task, result or DLQ entry was stored.
	Stored time.Time `json:"stored,omitzero"`
}

// Status finds task typ/id. It looks in the order a task moves (a
// delayed task's schedule, TASKS and the workers, RESULTS, the DLQ), so a
// task that moves on while it looks is found at its later place, never
// missed. Unknown is also the answer for a task whose result expired.
func (c *Client) Status(ctx context.Context, typ, id string) (*Status, error) {
	st, _, err := c.find(ctx, typ, id)
	return st, err
}

// found is a task found in TASKS: the message, to copy into the DLQ.
type found struct {
	subject string
	seq     uint64
	header  nats.Header
	data    []byte
}

func (c *Client) find(ctx context.Context, typ, id string) (*Status, *found, error) {
	if err := ValidType(typ); err != nil {
		return nil, nil, err
	}
	if err := task.ValidID(id); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	st := &Status{Type: typ, ID: id, State: Unknown}
	sc, err := c.GetDelayed(ctx, id)
	switch {
	case err == nil && sc.Type == typ:
		st.State, st.At, st.Seq, st.Stored = Scheduled, sc.Spec.At, sc.Seq, sc.Created
		return st, &found{subject: c.o.Topology.TaskSubject(typ), seq: sc.Seq, header: sc.Header, data: sc.Data}, nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return nil, nil, err
	}
	f, pos, of, err := c.scanTasks(ctx, typ, id)
	if err != nil {
		return nil, nil, err
	}
	if f != nil {
		// A task being worked on stays in TASKS until it is acknowledged.
		if r, err := c.ask(ctx, "task.status", typ, id); err != nil {
			return nil, nil, err
		} else if r != nil {
			st.State, st.Worker, st.Since, st.Seq = Running, r.Worker, r.Since, f.seq
			return st, f, nil
		}
		st.State, st.Position, st.Of, st.Seq = Pending, pos, of, f.seq
		return st, f, nil
	}
	results, err := c.stream(ctx, c.o.Topology.ResultsStream())
	if err != nil {
		return nil, nil, err
	}
	m, err := results.GetLastMsgForSubject(ctx, c.o.Topology.ResultSubject(typ, id))
	switch {
	case err == nil:
		st.State, st.Backend, st.Duration, st.Result, st.Stored = Done, m.Header.Get(task.HeaderBackend), m.Header.Get(task.HeaderDuration), m.Data, m.Time
		st.Attempts, _ = strconv.Atoi(m.Header.Get(task.HeaderAttempts))
		return st, nil, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil, fmt.Errorf("result %s %s: %w", typ, id, err)
	}
	item, err := c.dead(ctx, typ, id)
	if err != nil {
		return nil, nil, err
	}
	if item != nil {
		st.State, st.Reason, st.Error, st.Seq, st.Stored = DeadLettered, string(item.Reason()), item.Error(), item.Seq, item.Time
		return st, nil, nil
	}
	// Not in TASKS any more, no result, no DLQ entry: it may run on a
	// worker whose acknowledgement is all that is left, or nowhere.
	if r, err := c.ask(ctx, "task.status", typ, id); err != nil {
		return nil, nil, err
	} else if r != nil {
		st.State, st.Worker, st.Since = Running, r.Worker, r.Since
	}
	return st, nil, nil
}

// idOf is the task id the worker gives a message of TASKS (task.Parse,
// then task.(*Task).Firing for a periodic schedule's firing).
func (c *Client) idOf(h nats.Header, seq uint64, stored time.Time) string {
	if name, ok := strings.CutPrefix(h.Get(task.HeaderScheduler), EveryPrefix(c.o.Topology)); ok {
		return FiringID(name, stored)
	}
	if id := h.Get(task.HeaderID); id != "" && task.ValidID(id) == nil {
		return id
	}
	if id := h.Get(task.HeaderMsgID); id != "" && h.Get(task.HeaderID) == "" && task.ValidID(id) == nil {
		return id
	}
	return strconv.FormatUint(seq, 10)
}

// scanTasks reads the tasks of type typ in TASKS, oldest first, for the
// one with id; it returns it, its position and the count.
func (c *Client) scanTasks(ctx context.Context, typ, id string) (*found, int, int, error) {
	s, err := c.tasksStream(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	subj := c.o.Topology.TaskSubject(typ)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("stream %s: %w", c.o.Topology.TasksStream(), err)
	}
	of := int(info.State.Subjects[subj])
	if of == 0 {
		return nil, 0, 0, nil
	}
	if of > c.o.ScanLimit {
		return nil, 0, 0, fmt.Errorf("TASKS holds %d tasks of type %s, more than the %d a lookup reads", of, typ, c.o.ScanLimit)
	}
	seq := info.State.FirstSeq
	for pos := 1; pos <= of; pos++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, 0, 0, fmt.Errorf("read %s: %w", subj, err)
		}
		if c.idOf(m.Header, m.Sequence, m.Time) == id {
			return &found{subject: m.Subject, seq: m.Sequence, header: m.Header, data: m.Data}, pos, of, nil
		}
		seq = m.Sequence + 1
	}
	return nil, 0, 0, nil
}

// dead returns the newest DLQ entry of task typ/id, or nil.
func (c *Client) dead(ctx context.Context, typ, id string) (*dlq.Item, error) {
	d, err := c.stream(ctx, c.o.Topology.DLQStream())
	if err != nil {
		return nil, err
	}
	subj := c.o.Topology.DLQSubject(typ)
	info, err := d.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", c.o.Topology.DLQStream(), err)
	}
	n := int(info.State.Subjects[subj])
	if n == 0 {
		return nil, nil
	}
	if n > c.o.ScanLimit {
		return nil, fmt.Errorf("the DLQ holds %d tasks of type %s, more than the %d a lookup reads", n, typ, c.o.ScanLimit)
	}
	var last *dlq.Item
	seq := info.State.FirstSeq
	for range n {
		m, err := d.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", subj, err)
		}
		if m.Header.Get(task.HeaderID) == id {
			last = &dlq.Item{Seq: m.Sequence, Subject: m.Subject, Time: m.Time, Header: m.Header, Data: m.Data}
		}
		seq = m.Sequence + 1
	}
	return last, nil
}

// ask sends a task request to every worker and returns the reply of the
// one running the task (for task.cancel: that stopped it), or nil when
// none says so within AskWait.
func (c *Client) ask(ctx context.Context, op, typ, id string) (*health.TaskReply, error) {
	nc := c.js.Conn()
	body, err := json.Marshal(health.TaskRequest{Type: typ, ID: id})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", op, err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // only stops the replies
	subject := health.AdminSubject(c.o.Topology.Prefix) + ".all." + op
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return nil, fmt.Errorf("admin %s: %w", op, err)
	}
	wait := time.NewTimer(c.o.AskWait)
	defer wait.Stop()
	for {
		select {
		case m := <-replies:
			var r health.TaskReply
			if json.Unmarshal(m.Data, &r) != nil || r.Error != "" {
				continue
			}
			if r.Running || r.Cancelled {
				return &r, nil
			}
		case <-wait.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ErrNotCancellable means the task is past cancelling: done, already
// dead-lettered, or unknown.
var ErrNotCancellable = errors.New("task cannot be cancelled")

// Cancellation says what Cancel did.
type Cancellation struct {
	// Was is where the task was: scheduled, pending or running.
	Was Status
	// DLQSeq is the DLQ entry Cancel stored for a scheduled or pending
	// task; 0 for a running one, which its worker dead-letters.
	DLQSeq uint64
	// Worker is the worker that stopped a running task.
	Worker string
}

// Cancel removes a scheduled or pending task, dead-lettering it first
// with reason cancelled (its copy is stored before it is deleted, so it
// never disappears without a trace; `dlq replay` runs it after all, at
// once), or asks the worker running it to stop it, which dead-letters it.
// A task that is done, dead-lettered or unknown is not cancelled: the
// error wraps ErrNotCancellable and says where it is.
func (c *Client) Cancel(ctx context.Context, typ, id string) (*Cancellation, error) {
	st, f, err := c.find(ctx, typ, id)
	if err != nil {
		return nil, err
	}
	out := &Cancellation{Was: *st}
	switch st.State {
	case Scheduled, Pending:
		seq, err := c.deadLetter(ctx, st, f)
		if err != nil {
			return nil, err
		}
		out.DLQSeq = seq
		taken, err := c.remove(ctx, f.seq)
		if err != nil {
			return nil, fmt.Errorf("cancel %s %s: its DLQ copy is stored (seq %d) but removing it from %s failed: %w",
				typ, id, seq, c.o.Topology.TasksStream(), err)
		}
		if taken && st.State == Scheduled {
			// It fired meanwhile: its firing waits in TASKS (or runs).
			if fired, _, _, err := c.scanTasks(ctx, typ, id); err == nil && fired != nil {
				if _, err := c.remove(ctx, fired.seq); err != nil {
					return nil, fmt.Errorf("cancel %s %s: its DLQ copy is stored (seq %d) but removing its firing from %s failed: %w",
						typ, id, seq, c.o.Topology.TasksStream(), err)
				}
			}
		}
		// A worker may have taken it meanwhile (a delayed task fired, a
		// pending one fetched): stop it there too. Its own DLQ copy of a
		// task with a Nats-Msg-Id is deduplicated against ours.
		r, err := c.ask(ctx, "task.cancel", typ, id)
		if err != nil {
			return nil, err
		}
		if r != nil {
			out.Worker = r.Worker
			return out, nil
		}
		if taken {
			if now, err := c.Status(ctx, typ, id); err == nil && now.State == Done {
				// It finished first: the copy would be a false trace.
				if d, err := c.stream(ctx, c.o.Topology.DLQStream()); err == nil {
					_ = d.DeleteMsg(ctx, seq)
				}
				return nil, fmt.Errorf("%w: %s %s finished before it could be cancelled (backend %s)", ErrNotCancellable, typ, id, now.Backend)
			}
		}
		return out, nil
	case Running:
		r, err := c.ask(ctx, "task.cancel", typ, id)
		if err != nil {
			return nil, err
		}
		if r == nil || !r.Cancelled {
			return nil, fmt.Errorf("%w: %s %s was running on %s but no worker stopped it (it may just have finished)", ErrNotCancellable, typ, id, st.Worker)
		}
		out.Worker = r.Worker
		return out, nil
	case Done:
		return nil, fmt.Errorf("%w: %s %s is done (backend %s)", ErrNotCancellable, typ, id, st.Backend)
	case DeadLettered:
		return nil, fmt.Errorf("%w: %s %s is dead-lettered already (reason %s, DLQ seq %d)", ErrNotCancellable, typ, id, st.Reason, st.Seq)
	}
	return nil, fmt.Errorf("%w: %s %s: %w", ErrNotCancellable, typ, id, ErrNotFound)
}

// remove deletes message seq from TASKS; taken reports that it was gone
// already (fired, or acknowledged by a worker).
func (c *Client) remove(ctx context.Context, seq uint64) (taken bool, err error) {
	s, err := c.tasksStream(ctx)
	if err != nil {
		return false, err
	}
	derr := s.DeleteMsg(ctx, seq)
	if derr == nil {
		return false, nil
	}
	// The delete's error names no cause a caller can test; the message
	// being gone is the one that is no failure.
	if _, err := s.GetMsg(ctx, seq); errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	return false, derr
}

// deadLetter stores the DLQ copy of a scheduled or pending task and
// returns its DLQ sequence. A delayed task's copy is the task as it would
// have fired (subject tasks.<type>), so that a replay runs it.
func (c *Client) deadLetter(ctx context.Context, st *Status, f *found) (uint64, error) {
	w := dlq.NewWriter(c.js, dlq.WriterOptions{Topology: c.o.Topology, Worker: c.o.Who, Now: c.o.Now})
	why := "cancelled while pending"
	if st.State == Scheduled {
		why = "cancelled while scheduled for " + st.At.UTC().Format(time.RFC3339)
	}
	e := &dlq.Entry{ID: st.ID, Type: st.Type, Subject: c.o.Topology.TaskSubject(st.Type), Seq: f.seq,
		Header: f.header, Payload: f.data, Reason: dlq.Cancelled, Err: errors.New(why)}
	msg := &nats.Msg{Subject: c.o.Topology.DLQSubject(st.Type), Header: w.Header(e), Data: f.data}
	// The same dedupe key the worker's DLQ writer uses, so a worker that
	// also dead-letters it (it started meanwhile) stores one entry.
	msgID := f.header.Get(task.HeaderMsgID)
	if msgID == "" {
		msgID = "dlq-" + c.o.Topology.TasksStream() + "-" + strconv.FormatUint(f.seq, 10)
	}
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
	if err != nil {
		return 0, fmt.Errorf("cancel %s %s: store its DLQ copy: %w", st.Type, st.ID, err)
	}
	return ack.Sequence, nil
}
