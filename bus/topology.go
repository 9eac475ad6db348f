package bus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream and subject defaults of the contract.
const (
	DefaultResultsMaxAge = time.Hour
	DefaultHealthMaxAge  = 24 * time.Hour
	// DefaultHealthPerSubject bounds each health subject; the last message
	// of a subject is the current state, the rest is recent history.
	DefaultHealthPerSubject = 100
	// DuplicatesWindow is the TASKS dedupe window for Nats-Msg-Id.
	DuplicatesWindow = 2 * time.Minute
	// DefaultConsumer is the durable pull consumer every worker shares.
	DefaultConsumer = "workers"
	// DefaultAdvisoriesMaxAge is how long captured advisories are kept:
	// long enough for a fleet that crash-looped over a weekend to come
	// back and still act on every one.
	DefaultAdvisoriesMaxAge = 7 * 24 * time.Hour
)

// Topology names the streams and subjects of one Breakwater installation and
// holds the stream settings that are configurable. The zero value is the
// contract's default installation (no prefix).
type Topology struct {
	// Prefix, when set, is prepended as a token to every subject
	// ("acme.tasks.>") and to every stream name ("acme_TASKS").
	Prefix string
	// Replicas for the streams. 0 means 1 on create and "keep what the
	// operator chose" on update.
	Replicas int
	// ResultsMaxAge is how long results are kept. Default 1h.
	ResultsMaxAge time.Duration
	// DLQMaxBytes caps the DLQ stream; 0 means unlimited (the default:
	// nothing is ever discarded silently).
	DLQMaxBytes int64
}

func (t Topology) stream(base string) string {
	if t.Prefix == "" {
		return base
	}
	return t.Prefix + "_" + base
}

func (t Topology) subject(s string) string {
	if t.Prefix == "" {
		return s
	}
	return t.Prefix + "." + s
}

// TasksStream is the work-queue stream of task requests.
func (t Topology) TasksStream() string { return t.stream("TASKS") }

// ResultsStream holds one result per task.
func (t Topology) ResultsStream() string { return t.stream("RESULTS") }

// DLQStream holds tasks that could not be completed.
func (t Topology) DLQStream() string { return t.stream("DLQ") }

// HealthStream holds health events.
func (t Topology) HealthStream() string { return t.stream("HEALTH") }

// AdvisoriesStream captures the server's max-deliveries advisories about
// TASKS, so that none is lost while no worker listens.
func (t Topology) AdvisoriesStream() string { return t.stream("ADVISORIES") }

// MaxDeliveriesAdvisorySubject is the subject of the server's advisory that
// a message of TASKS reached the max_deliver of consumer ("*" for any
// consumer). The stream name in it carries the prefix, so installations
// sharing a server do not see each other's advisories.
func (t Topology) MaxDeliveriesAdvisorySubject(consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + t.TasksStream() + "." + consumer
}

// TaskSubject is the subject a task of type typ is published to.
func (t Topology) TaskSubject(typ string) string { return t.subject("tasks." + typ) }

// TasksFilter matches every task subject.
func (t Topology) TasksFilter() string { return t.subject("tasks.>") }

// SchedulesFilter matches every schedule message (delayed and periodic
// tasks). They live in TASKS because the server fires a schedule only into
// a subject of its own stream.
func (t Topology) SchedulesFilter() string { return t.subject("schedules.>") }

// TaskType returns the type of a task subject ("tasks.code.generate" has
// type "code.generate"), and false when subject is not a task subject.
func (t Topology) TaskType(subject string) (string, bool) {
	typ, ok := strings.CutPrefix(subject, t.subject("tasks."))
	return typ, ok && typ != ""
}

// ResultSubject is where the result of task id of type typ is stored.
func (t Topology) ResultSubject(typ, id string) string {
	return t.subject("results." + typ + "." + id)
}

// ResultsFilter matches every result of type typ, or every result when typ is "".
func (t Topology) ResultsFilter(typ string) string {
	if typ == "" {
		return t.subject("results.>")
	}
	return t.subject("results." + typ + ".*")
}

// DLQSubject is where dead-lettered tasks of type typ are stored.
func (t Topology) DLQSubject(typ string) string { return t.subject("dlq." + typ) }

// DLQFilter matches every DLQ subject.
func (t Topology) DLQFilter() string { return t.subject("dlq.>") }

// HealthBackendSubject carries the health events of backend name.
func (t Topology) HealthBackendSubject(name string) string {
	return t.subject("health.backend." + name)
}

// HealthWorkerSubject carries the heartbeats of worker id.
func (t Topology) HealthWorkerSubject(id string) string {
	return t.subject("health.worker." + id)
}

// HealthAlertSubject carries alert name.
func (t Topology) HealthAlertSubject(name string) string {
	return t.subject("health.alert." + name)
}

// HealthFilter matches every health subject.
func (t Topology) HealthFilter() string { return t.subject("health.>") }

// StreamConfigs returns the streams as they are created: the four of the
// contract and ADVISORIES, all on file storage, with the retention and
// limits of each.
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	replicas := max(t.Replicas, 1)
	resultsAge := t.ResultsMaxAge
	if resultsAge <= 0 {
		resultsAge = DefaultResultsMaxAge
	}
	dlqBytes := t.DLQMaxBytes
	if dlqBytes <= 0 {
		dlqBytes = -1
	}
	return []jetstream.StreamConfig{{
		Name:        t.TasksStream(),
		Description: "Breakwater task requests (work queue)",
		Subjects:    []string{t.TasksFilter(), t.SchedulesFilter()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Duplicates:  DuplicatesWindow,
		MaxMsgs:     -1, MaxBytes: -1, MaxMsgsPerSubject: -1,
		// The server's scheduler fires delayed and periodic tasks; it
		// needs roll-ups (one message per schedule subject).
		AllowMsgSchedules: true,
		AllowRollup:       true,
		// Schedules are read by subject from any replica, by clients
		// that may not use the stream API.
		AllowDirect: true,
	}, {
		Name:        t.ResultsStream(),
		Description: "Breakwater results, one per task",
		Subjects:    []string{t.ResultsFilter("")},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      resultsAge,
		// A task redelivered after its result was stored may publish it
		// again; one message per subject keeps "one result per task".
		MaxMsgsPerSubject: 1,
		Duplicates:        min(DuplicatesWindow, resultsAge),
		AllowDirect:       true,
		MaxMsgs:           -1, MaxBytes: -1,
	}, {
		Name:        t.DLQStream(),
		Description: "Breakwater dead-lettered tasks",
		Subjects:    []string{t.DLQFilter()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxBytes:    dlqBytes,
		// Refuse new entries instead of dropping old ones: a full DLQ
		// makes the task stay in TASKS, it never loses one.
		Discard:    jetstream.DiscardNew,
		Duplicates: DuplicatesWindow,
		MaxMsgs:    -1, MaxMsgsPerSubject: -1,
	}, {
		Name:              t.HealthStream(),
		Description:       "Breakwater health events; the last message per subject is the current state",
		Subjects:          []string{t.HealthFilter()},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		MaxAge:            DefaultHealthMaxAge,
		MaxMsgsPerSubject: DefaultHealthPerSubject,
		AllowDirect:       true,
		// The server's default, said out loud: left at 0 it differs from
		// what the server stores, and every start updated the stream.
		Duplicates: DuplicatesWindow,
		MaxMsgs:    -1, MaxBytes: -1,
	}, {
		Name:        t.AdvisoriesStream(),
		Description: "Breakwater: the server's max-deliveries advisories about tasks, until a worker acts on them",
		Subjects:    []string{t.MaxDeliveriesAdvisorySubject("*")},
		// Limits, not work queue: the advisories stay for the operator to
		// read after a worker acted on them, and the consumer's ack floor
		// says which were handled.
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  replicas,
		MaxAge:    DefaultAdvisoriesMaxAge,
		// Set, so that an unchanged stream is never updated at start.
		Duplicates: DuplicatesWindow,
		MaxMsgs:    -1, MaxBytes: -1, MaxMsgsPerSubject: -1,
	}}
}

// StreamManager is the part of jetstream.JetStream that EnsureStreams needs.
type StreamManager interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
}

// EnsureStreams creates the streams of StreamConfigs, or brings existing
// ones to their settings. It is idempotent and safe to run from many workers at
// once. On an existing stream it changes only the fields Breakwater manages,
// keeps the operator's replicas unless Topology.Replicas is set, and makes
// no update call at all when nothing differs.
func EnsureStreams(ctx context.Context, js StreamManager, t Topology) error {
	for _, want := range t.StreamConfigs() {
		if err := ensureStream(ctx, js, want, t.Replicas); err != nil {
			return err
		}
	}
	return nil
}

func ensureStream(ctx context.Context, js StreamManager, want jetstream.StreamConfig, replicas int) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another worker created it first; check its settings.
			return ensureStream(ctx, js, want, replicas)
		}
		if err != nil {
			return fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		return checkSchedules(s.CachedInfo().Config, want)
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if have.Retention != want.Retention {
		return fmt.Errorf("stream %s exists with retention %s, want %s: %w",
			want.Name, have.Retention, want.Retention, ErrStreamMismatch)
	}
	next := have
	for _, subj := range want.Subjects {
		if !slices.Contains(next.Subjects, subj) {
			next.Subjects = append(next.Subjects, subj)
		}
	}
	next.Storage = want.Storage
	next.MaxAge = want.MaxAge
	next.MaxMsgsPerSubject = want.MaxMsgsPerSubject
	next.Duplicates = want.Duplicates
	next.Discard = want.Discard
	next.MaxBytes = want.MaxBytes
	next.AllowDirect = want.AllowDirect || have.AllowDirect
	if want.AllowMsgSchedules {
		// Message schedules can be switched on, never off, and need
		// roll-ups; the stored tasks stay.
		next.AllowMsgSchedules, next.AllowRollup, next.DenyPurge = true, true, false
	}
	if replicas > 0 {
		next.Replicas = replicas
	}
	if reflect.DeepEqual(next, have) {
		return nil
	}
	s, err = js.UpdateStream(ctx, next)
	if err != nil {
		// A refusal (not a timeout) is final: say what the operator
		// must change rather than retry.
		var apiErr *jetstream.APIError
		if want.AllowMsgSchedules && !have.AllowMsgSchedules && errors.As(err, &apiErr) {
			return fmt.Errorf("stream %s exists without allow_msg_schedules, which delayed and periodic tasks need, and the server refused to set it (set allow_msg_schedules: true and add subject %s yourself): %w: %w",
				want.Name, want.Subjects[len(want.Subjects)-1], ErrStreamMismatch, err)
		}
		return fmt.Errorf("update stream %s: %w", want.Name, err)
	}
	return checkSchedules(s.CachedInfo().Config, want)
}

// checkSchedules catches a server that accepted the stream but ignored
// allow_msg_schedules (older than 2.12): schedules would be stored and
// never fire.
func checkSchedules(have, want jetstream.StreamConfig) error {
	if want.AllowMsgSchedules && !have.AllowMsgSchedules {
		return fmt.Errorf("stream %s does not allow message schedules (allow_msg_schedules), which delayed and periodic tasks need: nats-server 2.12 or newer is required: %w",
			want.Name, ErrStreamMismatch)
	}
	return nil
}

// ErrStreamMismatch means an existing stream cannot be brought to the
// contract's settings (for example TASKS made with limits retention).
var ErrStreamMismatch = errors.New("existing stream does not match the contract")

// ConsumerOptions configure the shared durable pull consumer of TASKS.
type ConsumerOptions struct {
	Name          string        // default DefaultConsumer
	AckWait       time.Duration // default 30s
	MaxDeliver    int           // default 5
	MaxAckPending int           // default 10000
}

// ConsumerManager is the part of jetstream.JetStream EnsureConsumer needs.
type ConsumerManager interface {
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
}

// EnsureConsumer creates or updates the durable pull consumer on TASKS that
// all workers share: explicit acks, every task subject.
func EnsureConsumer(ctx context.Context, js ConsumerManager, t Topology, o ConsumerOptions) (jetstream.Consumer, error) {
	cfg := t.ConsumerConfig(o)
	c, err := js.CreateOrUpdateConsumer(ctx, t.TasksStream(), cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, t.TasksStream(), err)
	}
	return c, nil
}

// ConsumerConfig is the configuration EnsureConsumer applies.
func (t Topology) ConsumerConfig(o ConsumerOptions) jetstream.ConsumerConfig {
	if o.Name == "" {
		o.Name = DefaultConsumer
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 5
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 10000
	}
	return jetstream.ConsumerConfig{
		Durable:       o.Name,
		Description:   "Breakwater workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: o.MaxAckPending,
		FilterSubject: t.TasksFilter(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}
