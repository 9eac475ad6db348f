package schedule

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
)

// ErrNotFound means no schedule (or task) has the name (or id) asked for.
var ErrNotFound = errors.New("not found")

// Kind tells delayed tasks from periodic schedules.
type Kind string

// The kinds of schedule messages.
const (
	// Once is a delayed task, on schedules.once.<task-id>.
	Once Kind = "once"
	// Every is a periodic schedule, on schedules.every.<name>.
	Every Kind = "every"
)

// Subjects of schedules in topology t.
func schedulesPrefix(t bus.Topology) string { return strings.TrimSuffix(t.SchedulesFilter(), ">") }

// OnceSubject is the subject of the delayed task id.
func OnceSubject(t bus.Topology, id string) string {
	return schedulesPrefix(t) + string(Once) + "." + id
}

// EverySubject is the subject of the periodic schedule name.
func EverySubject(t bus.Topology, name string) string {
	return schedulesPrefix(t) + string(Every) + "." + name
}

// EveryPrefix is the subject prefix of periodic schedules, which
// task.(*Task).Firing takes.
func EveryPrefix(t bus.Topology) string { return schedulesPrefix(t) + string(Every) + "." }

// FiringID is the task id of the firing of periodic schedule name stored
// in TASKS at storedAt, as the worker derives it (task.(*Task).Firing).
func FiringID(name string, storedAt time.Time) string {
	return name + "-" + strconv.FormatInt(storedAt.Unix(), 10)
}

// maxNameLen leaves room in a task id for "-<unix seconds>".
const maxNameLen = task.MaxIDLen - 12

// ValidName reports why name cannot name a periodic schedule: it must be
// one subject-safe token ([A-Za-z0-9_-]) of at most 116 bytes, so that
// every firing's id "<name>-<unix seconds>" is a valid task id.
func ValidName(name string) error {
	if err := task.ValidID(name); err != nil {
		return fmt.Errorf("%w: schedule name: %w", ErrInvalid, err)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: schedule name of %d bytes exceeds %d", ErrInvalid, len(name), maxNameLen)
	}
	return nil
}

// ValidType reports why typ cannot be a task type: dot-separated
// non-empty tokens without wildcards, whitespace or control characters.
func ValidType(typ string) error {
	if err := task.ValidType(typ); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkHeaders refuses headers a schedule cannot carry: the server's own
// (Nats-*: schedule, rollup, dedupe and expectation headers would change
// what is stored or be stripped from the firings) and those given by id.
func checkHeaders(h nats.Header, reserved ...string) error {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), strings.ToLower(serverReservedPrefix)) {
			return fmt.Errorf("%w: header %s: Nats-* headers are the server's", ErrInvalid, k)
		}
		if slices.ContainsFunc(reserved, func(r string) bool { return strings.EqualFold(r, k) }) {
			return fmt.Errorf("%w: header %s is set from the schedule", ErrInvalid, k)
		}
	}
	return nil
}

// Schedule is a stored schedule message: a periodic schedule or a delayed
// task.
type Schedule struct {
	Kind Kind
	// Name is the periodic schedule's name, or the delayed task's id.
	Name string
	// Type is the task type it fires (from Nats-Schedule-Target).
	Type string
	Spec Spec
	// Header holds the task's headers, without the schedule's own.
	Header nats.Header
	Data   []byte
	// Seq and Created are the schedule message's in TASKS.
	Seq     uint64
	Created time.Time
}

// Next is when it fires next after now (see Spec.Next).
func (s *Schedule) Next(now time.Time) (time.Time, bool) { return s.Spec.Next(s.Created, now) }

// Periodic describes a periodic schedule to add.
type Periodic struct {
	// Name is one token ([A-Za-z0-9_-], see ValidName); adding a name
	// that exists replaces that schedule.
	Name string
	Type string
	// Spec is Every, or Cron with an optional TimeZone.
	Spec Spec
	// Header is sent with every firing; Nats-* and Task-Id are refused
	// (each firing's id is "<name>-<unix seconds>").
	Header nats.Header
	Data   []byte
}

// Validate reports why p cannot be stored (wrapping ErrInvalid).
func (p Periodic) Validate(now time.Time) error {
	if err := ValidName(p.Name); err != nil {
		return err
	}
	if err := ValidType(p.Type); err != nil {
		return err
	}
	if !p.Spec.At.IsZero() {
		return fmt.Errorf("%w: a periodic schedule takes an interval or a cron pattern, not a time", ErrInvalid)
	}
	if err := p.Spec.Validate(now); err != nil {
		return err
	}
	return checkHeaders(p.Header, task.HeaderID, task.HeaderMsgID)
}

// Delayed describes one task to run later.
type Delayed struct {
	// ID is the task id, kept by the fired task (its result is stored
	// under it); it also dedupes the schedule within the duplicate window.
	ID   string
	Type string
	// At is when it runs, never before (rounded up to a whole second).
	At     time.Time
	Header nats.Header
	Data   []byte
}

// Options configure a Client. The zero value is the contract's default
// installation.
type Options struct {
	Topology bus.Topology
	// AskWait is how long Status and Cancel wait for the workers'
	// answers on the admin plane; default 500ms.
	AskWait time.Duration
	// Who is written as Dlq-Worker on the DLQ copies Cancel makes;
	// default "publisher".
	Who string
	// ScanLimit bounds the tasks of one type Status and Cancel read in
	// TASKS looking for an id; default 100000.
	ScanLimit int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Client adds, lists and removes schedules, publishes delayed tasks, and
// finds and cancels tasks by id. It is safe for concurrent use.
type Client struct {
	js jetstream.JetStream
	o  Options

	mu      sync.Mutex
	streams map[string]jetstream.Stream
}

// New returns a Client over js.
func New(js jetstream.JetStream, o Options) *Client {
	if o.AskWait <= 0 {
		o.AskWait = 500 * time.Millisecond
	}
	if o.Who == "" {
		o.Who = "publisher"
	}
	if o.ScanLimit <= 0 {
		o.ScanLimit = 100000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Client{js: js, o: o}
}

// tasksStream is TASKS.
func (c *Client) tasksStream(ctx context.Context) (jetstream.Stream, error) {
	return c.stream(ctx, c.o.Topology.TasksStream())
}

// stream looks stream name up once.
func (c *Client) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.streams[name]; ok {
		return s, nil
	}
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	if c.streams == nil {
		c.streams = map[string]jetstream.Stream{}
	}
	c.streams[name] = s
	return s, nil
}

// Add stores (or replaces) the periodic schedule p. Bad input is an error
// wrapping ErrInvalid and nothing is stored.
func (c *Client) Add(ctx context.Context, p Periodic) (*Schedule, error) {
	if err := p.Validate(c.o.Now()); err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: EverySubject(c.o.Topology, p.Name), Header: copyHeader(p.Header), Data: p.Data}
	setSchedule(msg.Header, c.o.Topology, p.Type, p.Spec)
	// One message per name: a new one replaces the old schedule.
	msg.Header.Set(HeaderRollup, rollupSubject)
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("add schedule %s: %w", p.Name, err)
	}
	return &Schedule{Kind: Every, Name: p.Name, Type: p.Type, Spec: p.Spec, Header: copyHeader(p.Header), Data: p.Data,
		Seq: ack.Sequence, Created: c.o.Now()}, nil
}

func setSchedule(h nats.Header, t bus.Topology, typ string, s Spec) {
	h.Set(HeaderSchedule, s.Pattern())
	h.Set(HeaderTarget, t.TaskSubject(typ))
	if s.TimeZone != "" {
		h.Set(HeaderTimeZone, s.TimeZone)
	}
}

func copyHeader(h nats.Header) nats.Header {
	out := make(nats.Header, len(h)+4)
	for k, v := range h {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// DelayMsg turns msg, a task for tasks.<typ> with task id id, into its
// schedule message in place: stored on schedules.once.<id>, it is
// published by the server to tasks.<typ> at at (rounded up to a whole
// second: never before at), with every header of msg, its Task-Id kept.
// It refuses (ErrInvalid) a time that is not in the future and headers
// the server owns.
func DelayMsg(t bus.Topology, msg *nats.Msg, typ, id string, at, now time.Time) error {
	spec := Spec{At: at}
	if err := spec.Validate(now); err != nil {
		return err
	}
	if err := task.ValidID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	for k := range msg.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") && !strings.EqualFold(k, task.HeaderMsgID) {
			return fmt.Errorf("%w: header %s: Nats-* headers are the server's", ErrInvalid, k)
		}
	}
	msg.Subject = OnceSubject(t, id)
	msg.Header.Set(task.HeaderID, id)
	setSchedule(msg.Header, t, typ, spec)
	return nil
}

// Delay stores the delayed task d. Its Nats-Msg-Id is its id, so a repeat
// within the duplicate window is stored once (PubAck.Duplicate).
func (c *Client) Delay(ctx context.Context, d Delayed) (*jetstream.PubAck, error) {
	if err := ValidType(d.Type); err != nil {
		return nil, err
	}
	if err := checkHeaders(d.Header, task.HeaderID, task.HeaderMsgID); err != nil {
		return nil, err
	}
	msg := &nats.Msg{Header: copyHeader(d.Header), Data: d.Data}
	if err := DelayMsg(c.o.Topology, msg, d.Type, d.ID, d.At, c.o.Now()); err != nil {
		return nil, err
	}
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(d.ID))
	if err != nil {
		return nil, fmt.Errorf("delay task %s: %w", d.ID, err)
	}
	return ack, nil
}

// Get returns the periodic schedule name, or an error wrapping
// ErrNotFound.
func (c *Client) Get(ctx context.Context, name string) (*Schedule, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	return c.get(ctx, Every, name)
}

// GetDelayed returns the delayed task id while it waits, or an error
// wrapping ErrNotFound (it never existed, fired or was cancelled).
func (c *Client) GetDelayed(ctx context.Context, id string) (*Schedule, error) {
	if err := task.ValidID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c.get(ctx, Once, id)
}

func (c *Client) get(ctx context.Context, kind Kind, name string) (*Schedule, error) {
	s, err := c.tasksStream(ctx)
	if err != nil {
		return nil, err
	}
	subj := OnceSubject(c.o.Topology, name)
	if kind == Every {
		subj = EverySubject(c.o.Topology, name)
	}
	m, err := s.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("schedule %s: %w", subj, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", subj, err)
	}
	return c.parse(kind, name, m)
}

// parse reads a stored schedule message.
func (c *Client) parse(kind Kind, name string, m *jetstream.RawStreamMsg) (*Schedule, error) {
	spec, err := ParseSpec(m.Header)
	if err != nil {
		return nil, fmt.Errorf("schedule %s: %w", m.Subject, err)
	}
	typ, ok := c.o.Topology.TaskType(m.Header.Get(HeaderTarget))
	if !ok {
		return nil, fmt.Errorf("schedule %s: target %q is not a task subject: %w", m.Subject, m.Header.Get(HeaderTarget), ErrInvalid)
	}
	h := copyHeader(m.Header)
	for k := range h {
		if strings.HasPrefix(k, HeaderSchedule) || k == HeaderRollup {
			delete(h, k)
		}
	}
	return &Schedule{Kind: kind, Name: name, Type: typ, Spec: spec, Header: h, Data: m.Data, Seq: m.Sequence, Created: m.Time}, nil
}

// List returns the periodic schedules, by name.
func (c *Client) List(ctx context.Context) ([]*Schedule, error) { return c.list(ctx, Every) }

// ListDelayed returns the delayed tasks still waiting, by id.
func (c *Client) ListDelayed(ctx context.Context) ([]*Schedule, error) { return c.list(ctx, Once) }

// subjects returns the subjects of the schedules of kind stored, and
// their common prefix, with one stream request.
func (c *Client) subjects(ctx context.Context, kind Kind) (map[string]uint64, string, error) {
	s, err := c.tasksStream(ctx)
	if err != nil {
		return nil, "", err
	}
	prefix := schedulesPrefix(c.o.Topology) + string(kind) + "."
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+"*"))
	if err != nil {
		return nil, "", fmt.Errorf("stream %s: %w", c.o.Topology.TasksStream(), err)
	}
	return info.State.Subjects, prefix, nil
}

func (c *Client) list(ctx context.Context, kind Kind) ([]*Schedule, error) {
	subjects, prefix, err := c.subjects(ctx, kind)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(subjects))
	for subj := range subjects {
		names = append(names, strings.TrimPrefix(subj, prefix))
	}
	slices.Sort(names)
	out := make([]*Schedule, 0, len(names))
	for _, name := range names {
		sc, err := c.get(ctx, kind, name)
		if errors.Is(err, ErrNotFound) {
			continue // fired or removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// Remove deletes the periodic schedule name: it fires no more. An error
// wraps ErrNotFound when there is none. It deletes by sequence (the right
// an operator has), again if the schedule was replaced meanwhile.
func (c *Client) Remove(ctx context.Context, name string) error {
	sc, err := c.Get(ctx, name)
	if err != nil {
		return err
	}
	for range 10 {
		if _, err := c.remove(ctx, sc.Seq); err != nil {
			return fmt.Errorf("remove schedule %s: %w", name, err)
		}
		if sc, err = c.Get(ctx, name); errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
	}
	return fmt.Errorf("remove schedule %s: it is replaced as fast as it is removed", name)
}

// Firing is a recent firing of a periodic schedule found by its result.
type Firing struct {
	ID string
	// At is the time it was due.
	At time.Time
	// Result is its result message.
	Result *jetstream.RawStreamMsg
}

// LastFired returns the newest of the last few firings of sc whose result
// is stored (each firing's id is "<name>-<unix seconds>" of when it
// fired, at or a second after it was due), or nil when none has one.
func (c *Client) LastFired(ctx context.Context, sc *Schedule) (*Firing, error) {
	if sc.Kind != Every {
		return nil, nil
	}
	results, err := c.stream(ctx, c.o.Topology.ResultsStream())
	if err != nil {
		return nil, err
	}
	for _, due := range sc.Spec.recent(sc.Created, c.o.Now(), 3) {
		for _, late := range []time.Duration{0, time.Second} {
			id := FiringID(sc.Name, due.Add(late))
			m, err := results.GetLastMsgForSubject(ctx, c.o.Topology.ResultSubject(sc.Type, id))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("result %s: %w", id, err)
			}
			return &Firing{ID: id, At: due, Result: m}, nil
		}
	}
	return nil, nil
}

// Count returns how many schedules of kind are stored (periodic schedules
// for Every, delayed tasks not yet fired for Once) with one stream request,
// without reading them.
func (c *Client) Count(ctx context.Context, kind Kind) (uint64, error) {
	subjects, _, err := c.subjects(ctx, kind)
	// One message a subject: a schedule is replaced by a roll-up.
	return uint64(len(subjects)), err
}
