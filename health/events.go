package health

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/breakwater/breakwater/bus"
)

// State is a backend's health as health.backend events spell it (the
// "state" field): wire format, so the values never change.
type State string

// Backend states.
const (
	Healthy   State = "healthy"
	Degraded  State = "degraded"
	Unhealthy State = "unhealthy"
)

// BreakerState is a circuit breaker's state as the events spell it (the
// "breaker" field).
type BreakerState string

// Breaker states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerOpen     BreakerState = "open"
	BreakerHalfOpen BreakerState = "half-open"
)

// AlertStatus says whether an alert fires (the "status" field of
// health.alert events).
type AlertStatus string

// Alert statuses.
const (
	Firing   AlertStatus = "firing"
	Resolved AlertStatus = "resolved"
)

// WorkerStatus is the "status" field of a worker heartbeat.
type WorkerStatus string

// Worker statuses in heartbeats.
const (
	WorkerRunning WorkerStatus = "running"
	// WorkerStopped is the last heartbeat of a worker that shut down on
	// purpose: other workers do not report it as stale.
	WorkerStopped WorkerStatus = "stopped"
)

// Kind says why a backend event was sent (the "kind" field).
type Kind string

// Kinds of backend events.
const (
	// KindChange: the backend's state or breaker changed.
	KindChange Kind = "change"
	// KindHeartbeat: sent every Interval whatever happened.
	KindHeartbeat Kind = "heartbeat"
	// KindSnapshot: not published; Monitor.Snapshot's answer (the admin
	// plane's status).
	KindSnapshot Kind = "snapshot"
)

// Latency is a backend's latency percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// BackendEvent is the body of health.backend.<name>.
type BackendEvent struct {
	Backend     string       `json:"backend"`
	State       State        `json:"state"`
	Breaker     BreakerState `json:"breaker"`
	SuccessRate float64      `json:"success_rate"` // 0..1 over the last 200 calls
	LatencyMS   Latency      `json:"latency_ms"`
	InFlight    int          `json:"in_flight"`
	// Calls and Rejected are the calls in the success rate's window and,
	// of those, the ones refused as the task's fault (they count as
	// successes for the state: the backend answered).
	Calls        int       `json:"calls"`
	Rejected     int       `json:"rejected"`
	Availability float64   `json:"availability"` // percent over the last hour
	Since        time.Time `json:"since"`        // when the state began
	Reason       string    `json:"reason"`
	Worker       string    `json:"worker"`
	// Kind says why it was sent: KindChange or KindHeartbeat
	// (KindSnapshot in Monitor.Snapshot).
	Kind Kind      `json:"kind"`
	At   time.Time `json:"at"`
	// ConcurrencyLimit bounds the backend's calls in flight now (the
	// adaptive limit, or max_concurrency); absent when unbounded.
	ConcurrencyLimit *int `json:"concurrency_limit,omitempty"`
	// RetryBudget is how many retries the backend's retry budget allows
	// now; absent when it has none.
	RetryBudget *float64 `json:"retry_budget,omitempty"`
}

// Tasks counts a worker's tasks.
type Tasks struct {
	Done         uint64 `json:"done"`
	Failed       uint64 `json:"failed"`
	DeadLettered uint64 `json:"dead_lettered"`
}

// WorkerEvent is the body of health.worker.<id>, a heartbeat.
type WorkerEvent struct {
	Worker        string       `json:"worker"`
	Status        WorkerStatus `json:"status"`
	Version       string       `json:"version"`
	UptimeSeconds float64      `json:"uptime_s"`
	Tasks         Tasks        `json:"tasks"`
	CacheHitRatio float64      `json:"cache_hit_ratio"`
	InFlight      int64        `json:"in_flight"`
	Interval      float64      `json:"interval_s"` // heartbeats come this often
	// PausedRoutes are the routes an operator paused on this worker
	// (never null: an empty list says none, a missing field an older
	// worker).
	PausedRoutes []string  `json:"paused_routes"`
	At           time.Time `json:"at"`
	// ConfigHash identifies the config file the worker runs with (the
	// first 12 hex digits of its SHA-256; "" with no file), and
	// ConfigLoadedAt when it was loaded: at start or by the last reload.
	ConfigHash     string    `json:"config_hash,omitempty"`
	ConfigLoadedAt time.Time `json:"config_loaded_at,omitzero"`
}

// AlertEvent is the body of health.alert.<name>.
type AlertEvent struct {
	Alert     string      `json:"alert"`
	Status    AlertStatus `json:"status"`
	Backend   string      `json:"backend,omitempty"`
	Rule      Rule        `json:"rule"`
	Value     float64     `json:"value"`
	Threshold float64     `json:"threshold"`
	Message   string      `json:"message"`
	Worker    string      `json:"worker"` // who saw it
	At        time.Time   `json:"at"`
}

// Rule names the rule behind an alert (the "rule" field).
type Rule string

// Alert rules.
const (
	RuleBreakerOpen  Rule = "breaker_open" // value, threshold: seconds open
	RuleAvailability Rule = "availability" // value, threshold: percent
	RuleDLQSize      Rule = "dlq_size"     // value, threshold: percent of the limit
	RuleWorkerStale  Rule = "worker_stale" // value, threshold: seconds since the last heartbeat
)

// WorkerStats are what a worker heartbeat reports.
type WorkerStats struct {
	Done, Failed, DeadLettered uint64
	InFlight                   int64
	CacheHits, CacheMisses     uint64
	PausedRoutes               []string
	ConfigHash                 string
	ConfigLoadedAt             time.Time
}

// MaxEventSize is the largest health event a reader accepts, 64 KiB. The
// events a Monitor publishes are well under a kilobyte; a bigger one is not
// one of ours, and reading it would only cost memory.
const MaxEventSize = 64 << 10

// ErrInvalidEvent is wrapped by every error of DecodeEvent.
var ErrInvalidEvent = errors.New("health: invalid event")

// DecodeEvent decodes the health event stored on subject of t's HEALTH
// stream into a BackendEvent, WorkerEvent or AlertEvent, by the subject's
// kind (health.backend.<name>, health.worker.<id>, health.alert.<name>).
//
// It refuses an event, with an error wrapping ErrInvalidEvent, that is
// larger than MaxEventSize, is not a JSON object of its kind, lacks a
// required field, has a value out of its range, or names another backend,
// worker or alert than its subject does. Required are, for a backend event:
// backend, state, breaker and at; for a worker event: worker, status and
// at; for an alert: alert, status, rule and at.
//
// Every reader (the Monitor, publisher health, the console) drops what it
// refuses rather than track it: with deploy/nats/auth.conf only workers may
// publish on health.>, and this keeps the readers sane without it, or when
// a worker of another version publishes something else.
func DecodeEvent(t bus.Topology, subject string, data []byte) (any, error) {
	if len(data) > MaxEventSize {
		return nil, fmt.Errorf("%w: %d bytes on %s, at most %d", ErrInvalidEvent, len(data), subject, MaxEventSize)
	}
	rest, ok := strings.CutPrefix(subject, strings.TrimSuffix(t.HealthFilter(), ">"))
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a health subject", ErrInvalidEvent, subject)
	}
	kind, name, _ := strings.Cut(rest, ".")
	var (
		ev  any
		err error
	)
	switch kind {
	case "backend":
		ev, err = decode(data, name, checkBackend)
	case "worker":
		ev, err = decode(data, name, checkWorker)
	case "alert":
		ev, err = decode(data, name, checkAlert)
	default:
		return nil, fmt.Errorf("%w: %q is not a backend, worker or alert subject", ErrInvalidEvent, subject)
	}
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %w", ErrInvalidEvent, subject, err)
	}
	return ev, nil
}

// decode unmarshals data into an E and checks it against the name its
// subject gives.
func decode[E any](data []byte, name string, check func(*E, string) error) (E, error) {
	var ev E
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, err
	}
	return ev, check(&ev, name)
}

func checkBackend(ev *BackendEvent, token string) error {
	switch {
	case ev.Backend == "":
		return errors.New("no backend")
	case Token(ev.Backend) != token:
		return fmt.Errorf("backend %q on the subject of %q", short(ev.Backend), token)
	case ev.State != Healthy && ev.State != Degraded && ev.State != Unhealthy:
		return fmt.Errorf("state %q", short(ev.State))
	case ev.Breaker != BreakerClosed && ev.Breaker != BreakerOpen && ev.Breaker != BreakerHalfOpen:
		return fmt.Errorf("breaker %q", short(ev.Breaker))
	case ev.At.IsZero():
		return errors.New("no at")
	case ev.SuccessRate < 0 || ev.SuccessRate > 1:
		return fmt.Errorf("success_rate %v out of [0, 1]", ev.SuccessRate)
	case ev.Availability < 0 || ev.Availability > 100:
		return fmt.Errorf("availability %v out of [0, 100]", ev.Availability)
	case ev.LatencyMS.P50 < 0 || ev.LatencyMS.P95 < 0 || ev.LatencyMS.P99 < 0 || ev.InFlight < 0:
		return errors.New("negative latency or in_flight")
	}
	return nil
}

func checkWorker(ev *WorkerEvent, token string) error {
	switch {
	case ev.Worker == "":
		return errors.New("no worker")
	case Token(ev.Worker) != token:
		return fmt.Errorf("worker %q on the subject of %q", short(ev.Worker), token)
	case ev.Status != WorkerRunning && ev.Status != WorkerStopped:
		return fmt.Errorf("status %q", short(ev.Status))
	case ev.At.IsZero():
		return errors.New("no at")
	case ev.Interval > maxInterval.Seconds():
		return fmt.Errorf("interval_s %v over a day", ev.Interval)
	case ev.UptimeSeconds < 0 || ev.Interval < 0 || ev.InFlight < 0:
		return errors.New("negative uptime_s, interval_s or in_flight")
	case ev.CacheHitRatio < 0 || ev.CacheHitRatio > 1:
		return fmt.Errorf("cache_hit_ratio %v out of [0, 1]", ev.CacheHitRatio)
	}
	return nil
}

func checkAlert(ev *AlertEvent, name string) error {
	switch {
	case ev.Alert == "":
		return errors.New("no alert")
	case ev.Alert != name:
		return fmt.Errorf("alert %q on the subject of %q", short(ev.Alert), name)
	case ev.Status != Firing && ev.Status != Resolved:
		return fmt.Errorf("status %q", short(ev.Status))
	case ev.Rule == "":
		return errors.New("no rule")
	case ev.At.IsZero():
		return errors.New("no at")
	}
	return nil
}

// maxInterval bounds the heartbeat interval a worker event may announce:
// one far longer would keep a silent worker from ever being stale.
const maxInterval = 24 * time.Hour

// short cuts a value from an event for an error message.
func short[S ~string](s S) string {
	const n = 64
	if len(s) <= n {
		return string(s)
	}
	return string(s[:n]) + "..."
}
