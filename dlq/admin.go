package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// Reasons lists every reason of the contract.
func Reasons() []Reason {
	return []Reason{Exhausted, Rejected, InvalidResult, Expired, Poison, NoRoute, MaxDeliveries, Cancelled}
}

// ErrNotFound means no DLQ entry has the asked sequence.
var ErrNotFound = errors.New("no such DLQ entry")

// Filter selects DLQ entries; empty fields select everything. Lists are
// alternatives (any of), fields together must all match.
type Filter struct {
	Types    []string
	Reasons  []Reason
	Backends []string // any backend tried (Dlq-Backends)
	Since    time.Time
	Until    time.Time
	Seqs     []uint64
	Limit    int // 0: no limit
}

// Item is one DLQ entry as stored.
type Item struct {
	Seq     uint64
	Subject string
	Time    time.Time // when it was stored
	Header  nats.Header
	Data    []byte
}

// ID is the task id.
func (i *Item) ID() string { return i.Header.Get(task.HeaderID) }

// Reason is why the task was dead-lettered.
func (i *Item) Reason() Reason { return Reason(i.Header.Get(task.HeaderDLQReason)) }

// Error is the last error, redacted.
func (i *Item) Error() string { return i.Header.Get(task.HeaderDLQError) }

// Attempts is the number of backend calls made (Dlq-Attempts).
func (i *Item) Attempts() int {
	n, _ := strconv.Atoi(i.Header.Get(task.HeaderDLQAttempts))
	return n
}

// Replays is how many times the task was replayed before it failed.
func (i *Item) Replays() int {
	n, _ := strconv.Atoi(i.Header.Get(task.HeaderDLQReplays))
	return n
}

// FailedAt is Dlq-Failed-At, else the time the entry was stored.
func (i *Item) FailedAt() time.Time {
	if t, err := time.Parse(time.RFC3339, i.Header.Get(task.HeaderDLQFailedAt)); err == nil {
		return t
	}
	return i.Time
}

// Backends are the backends tried, in order.
func (i *Item) Backends() []string {
	v := i.Header.Get(task.HeaderDLQBackends)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// History is the attempt history, oldest first.
func (i *Item) History() ([]Record, error) { return DecodeHistory(i.Header.Get(HeaderHistory)) }

// Type is the task type, from the DLQ subject.
func (i *Item) Type(t bus.Topology) string {
	prefix := strings.TrimSuffix(t.DLQFilter(), ">")
	return strings.TrimPrefix(i.Subject, prefix)
}

// matches reports whether i passes f's per-entry conditions.
func (f *Filter) matches(i *Item, t bus.Topology) bool {
	switch {
	case len(f.Types) > 0 && !slices.Contains(f.Types, i.Type(t)):
	case len(f.Reasons) > 0 && !slices.Contains(f.Reasons, i.Reason()):
	case len(f.Backends) > 0 && !slices.ContainsFunc(i.Backends(), func(b string) bool { return slices.Contains(f.Backends, b) }):
	case !f.Since.IsZero() && i.Time.Before(f.Since):
	case !f.Until.IsZero() && i.Time.After(f.Until):
	default:
		return true
	}
	return false
}

// Admin reads, replays and purges DLQ entries.
type Admin struct {
	js      jetstream.JetStream
	topo    bus.Topology
	dlq     jetstream.Stream
	results jetstream.Stream
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
}

// AdminOption configures an Admin.
type AdminOption func(*Admin)

// WithTracing makes each replay a span linked to the failed task's trace;
// the replayed task carries the replay's trace context.
func WithTracing(tr trace.Tracer, p propagation.TextMapPropagator) AdminOption {
	return func(a *Admin) { a.tracer, a.prop = tr, p }
}

// NewAdmin opens the DLQ and RESULTS streams.
func NewAdmin(ctx context.Context, js jetstream.JetStream, t bus.Topology, opts ...AdminOption) (*Admin, error) {
	d, err := js.Stream(ctx, t.DLQStream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", t.DLQStream(), err)
	}
	r, err := js.Stream(ctx, t.ResultsStream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", t.ResultsStream(), err)
	}
	a := &Admin{js: js, topo: t, dlq: d, results: r}
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// List returns the entries matching f, in stream order.
func (a *Admin) List(ctx context.Context, f Filter) ([]*Item, error) {
	var out []*Item
	err := a.Scan(ctx, f, func(i *Item) error {
		out = append(out, i)
		return nil
	})
	return out, err
}

// Get returns the entry at seq, or ErrNotFound.
func (a *Admin) Get(ctx context.Context, seq uint64) (*Item, error) {
	m, err := a.dlq.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("read DLQ entry %d: %w", seq, err)
	}
	// An entry too large for the server keeps its payload in the
	// payloads bucket: show gives the payload back either way.
	data, err := LoadPayload(ctx, a.js, a.topo, m.Header, m.Data)
	if err != nil {
		return nil, fmt.Errorf("read DLQ entry %d: %w", seq, err)
	}
	return &Item{Seq: m.Sequence, Subject: m.Subject, Time: m.Time, Header: m.Header, Data: data}, nil
}

// Scan calls fn for each entry matching f, in stream order, up to f.Limit.
// It reads the entries present when it starts, a page at a time, so it
// holds one page, not the selection; fn may delete the entry it is given.
func (a *Admin) Scan(ctx context.Context, f Filter, fn func(*Item) error) error {
	return a.scan(ctx, f, scanOptions{}, fn)
}

// scanPage is how many entries one read of a scan asks for.
const scanPage = 256

// scanOptions tune how scan reads.
type scanOptions struct {
	// headersOnly leaves the payloads on the server (Item.Data is nil):
	// enough to match a filter.
	headersOnly bool
	// upTo is the last sequence read; 0: the stream's last when the
	// scan begins.
	upTo uint64
	// win, when set, bounds the entries held: a page asks only for as
	// many as it has free slots, an entry given to fn keeps its slot
	// until fn's owner releases it, one that does not match is released
	// at once.
	win *window
}

func (a *Admin) scan(ctx context.Context, f Filter, o scanOptions, fn func(*Item) error) error {
	n := 0
	visit := func(i *Item) (bool, error) {
		if o.headersOnly {
			i.Data = nil
		}
		if !f.matches(i, a.topo) {
			o.win.release(1)
			return true, nil
		}
		if err := fn(i); err != nil {
			return false, err
		}
		n++
		return f.Limit <= 0 || n < f.Limit, nil
	}
	if len(f.Seqs) > 0 {
		for _, seq := range f.Seqs {
			if _, err := o.win.reserve(ctx, 1); err != nil {
				return err
			}
			i, err := a.Get(ctx, seq)
			if err != nil {
				o.win.release(1)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				return err
			}
			if more, err := visit(i); err != nil || !more {
				return err
			}
		}
		return nil
	}
	info, err := a.dlq.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", a.topo.DLQStream(), err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	last := info.State.LastSeq
	if o.upTo > 0 {
		last = min(last, o.upTo)
	}
	// Settle "nothing matches" from the stream's state where it can: a
	// fetch finds that out only by waiting its whole wait.
	if !f.Since.IsZero() && f.Since.After(info.State.LastTime) {
		return nil
	}
	if len(f.Types) > 0 {
		si, err := a.dlq.Info(ctx, jetstream.WithSubjectFilter(a.topo.DLQFilter()))
		if err != nil {
			return fmt.Errorf("stream %s: %w", a.topo.DLQStream(), err)
		}
		if !slices.ContainsFunc(f.Types, func(typ string) bool { return si.State.Subjects[a.topo.DLQSubject(typ)] > 0 }) {
			return nil
		}
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: o.headersOnly}
	for _, typ := range f.Types {
		cfg.FilterSubjects = append(cfg.FilterSubjects, a.topo.DLQSubject(typ))
	}
	if !f.Since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.Since
	}
	cons, err := a.js.OrderedConsumer(ctx, a.topo.DLQStream(), cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
	}
	// reserved counts the slots taken for the current page that no
	// message has filled yet: they are given back however the page ends.
	reserved := 0
	defer func() { o.win.release(reserved) }()
	// left bounds the messages still to come (the stream's count, then
	// the consumer's pending count): no page asks for more.
	left := info.State.Msgs
	for {
		page, err := o.win.reserve(ctx, int(min(scanPage, left)))
		if err != nil {
			return err
		}
		reserved = page
		batch, err := cons.Fetch(page, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			reserved--
			meta, err := m.Metadata()
			if err != nil {
				o.win.release(1)
				return fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
			}
			i := &Item{Seq: meta.Sequence.Stream, Subject: m.Subject(), Time: meta.Timestamp, Header: m.Headers(), Data: m.Data()}
			if i.Seq > last || (!f.Until.IsZero() && i.Time.After(f.Until)) {
				o.win.release(1)
				return nil // stored after the scan began, or after Until: so is the rest
			}
			more, err := visit(i)
			if err != nil || !more {
				return err
			}
			if meta.NumPending == 0 || i.Seq == last {
				return nil
			}
			left = meta.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read %s: %w", a.topo.DLQStream(), err)
		}
		if got == 0 {
			return nil // nothing more matches
		}
		o.win.release(reserved)
		reserved = 0
	}
}

// Outcome is what replaying one entry did.
type Outcome int

// The outcomes of Replay.
const (
	// Replayed: the task is back in TASKS and the entry is gone.
	Replayed Outcome = iota
	// AlreadyDone: RESULTS holds the task's result (an earlier replay got
	// through before being interrupted): the entry is removed, nothing
	// is published.
	AlreadyDone
	// Purged: the entry was deleted.
	Purged
)

// String names the outcome as the summary line does.
func (o Outcome) String() string {
	switch o {
	case Replayed:
		return "replayed"
	case AlreadyDone:
		return "skipped"
	case Purged:
		return "purged"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// ReplaySubject is where the entry's task goes back to.
func (a *Admin) ReplaySubject(i *Item) string { return ReplaySubject(a.topo, i) }

// ReplaySubject is where the entry's task goes back to in topology t: its
// Dlq-Original-Subject, else tasks.<type>.
func ReplaySubject(t bus.Topology, i *Item) string {
	if s := i.Header.Get(task.HeaderDLQOriginalSubject); s != "" {
		return s
	}
	return t.TaskSubject(i.Type(t))
}

// ReplayMsgID is the Nats-Msg-Id of the replayed task: <id>-r<N>, N being
// the replay's number. It is the same for every run of one replay, so a
// replay interrupted after the publish and run again is deduplicated by
// TASKS instead of queueing the task twice.
func ReplayMsgID(i *Item) string {
	id := i.ID()
	if id == "" {
		id = "seq" + strconv.FormatUint(i.Seq, 10)
	}
	return id + "-r" + strconv.Itoa(i.Replays()+1)
}

// ReplayHeader is the header of the replayed task: the original's,
// without the Dlq-* and Nats-* headers, with Task-Id kept and Dlq-Replays
// incremented. An expired entry's task is replayed without its
// Task-Deadline (see ReplayDropsDeadline).
func ReplayHeader(i *Item) nats.Header {
	dropDeadline := ReplayDropsDeadline(i)
	h := make(nats.Header, len(i.Header))
	for k, v := range i.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "dlq-") || strings.HasPrefix(lk, "nats-") ||
			(dropDeadline && strings.EqualFold(k, task.HeaderDeadline)) {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	if id := i.ID(); id != "" {
		h.Set(task.HeaderID, id)
	}
	h.Set(task.HeaderDLQReplays, strconv.Itoa(i.Replays()+1))
	return h
}

// ReplayDropsDeadline reports whether the replay of i leaves out its
// Task-Deadline: i was dead-lettered because the deadline had passed, so
// with it the replayed task would be dead-lettered again at once, unrun.
// Entries dead-lettered for another reason keep theirs.
func ReplayDropsDeadline(i *Item) bool {
	if i.Reason() != Expired {
		return false
	}
	for k := range i.Header {
		if strings.EqualFold(k, task.HeaderDeadline) {
			return true
		}
	}
	return false
}

// resultStored reports whether RESULTS holds the result of i's task.
func (a *Admin) resultStored(ctx context.Context, i *Item) (bool, error) {
	id := i.ID()
	if task.ValidID(id) != nil {
		// No result is ever stored under such an id, and the id is
		// untrusted: ">" or "*" would make the subject a wildcard that
		// finds another task's result, and the entry would be removed
		// as done without its task ever running.
		return false, nil
	}
	_, err := a.results.GetLastMsgForSubject(ctx, a.topo.ResultSubject(i.Type(a.topo), id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("look up result of %s: %w", id, err)
	}
}

// ReplayOne puts the entry's task back on its original subject and then,
// once the server acknowledged it, deletes the entry. A task whose result
// is already stored is not published again (AlreadyDone). The task is
// published with ReplayHeader: an expired one without its Task-Deadline.
//
// Why a replay interrupted anywhere and run again neither loses nor
// duplicates a task:
//   - killed before the publish is acknowledged: the entry is still there
//     and the next run publishes it (if the first publish did reach the
//     server, the same Nats-Msg-Id makes the second a duplicate in TASKS'
//     window);
//   - killed after the publish, before the delete: within TASKS' duplicate
//     window (2m) the second publish is dropped as a duplicate; after it,
//     the task has usually run: its stored result makes the next run only
//     delete the entry. The one case left is a task replayed, failed again
//     and dead-lettered again (a second entry, Dlq-Replays 1), with the
//     first entry still there more than 2m later: rerunning the first
//     queues the task once more under <id>-r1: it runs twice (a task
//     fails before it has a result, so nothing says it already ran).
//     dlq list shows such a task twice, by the same id: purge the entry
//     with the lower Dlq-Replays first.
func (a *Admin) ReplayOne(ctx context.Context, i *Item) (Outcome, error) {
	done, err := a.resultStored(ctx, i)
	if err != nil {
		return 0, err
	}
	if done {
		return AlreadyDone, a.PurgeOne(ctx, i)
	}
	data, err := LoadPayload(ctx, a.js, a.topo, i.Header, i.Data)
	if err != nil {
		return 0, fmt.Errorf("replay %d: %w", i.Seq, err)
	}
	msg := &nats.Msg{Subject: a.ReplaySubject(i), Header: ReplayHeader(i), Data: data}
	if a.tracer != nil {
		var span trace.Span
		ctx, span = tracing.StartReplay(ctx, a.tracer, a.prop, i.Header, msg.Header, msg.Subject, i.Seq)
		defer span.End()
	}
	if _, err := a.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ReplayMsgID(i))); err != nil {
		return 0, fmt.Errorf("replay %d to %s: %w", i.Seq, msg.Subject, err)
	}
	if err := a.PurgeOne(ctx, i); err != nil {
		return 0, err
	}
	return Replayed, nil
}

// PurgeOne deletes the entry; one already gone is not an error.
func (a *Admin) PurgeOne(ctx context.Context, i *Item) error {
	if err := a.dlq.DeleteMsg(ctx, i.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete DLQ entry %d: %w", i.Seq, err)
	}
	// The entry first: a payload left behind by a failure here only
	// wastes space, an entry without its payload would lose the task.
	if err := DeletePayload(ctx, a.js, a.topo, i.Header); err != nil {
		return fmt.Errorf("delete DLQ entry %d's payload: %w", i.Seq, err)
	}
	return nil
}

// Usage returns the DLQ's stored bytes and its size limit (0: none), for
// the alert that fires well before anything would be discarded.
func Usage(ctx context.Context, js jetstream.JetStream, t bus.Topology) (used, limit int64, err error) {
	s, err := js.Stream(ctx, t.DLQStream())
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", t.DLQStream(), err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", t.DLQStream(), err)
	}
	return int64(info.State.Bytes), max(info.Config.MaxBytes, 0), nil
}
