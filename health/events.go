package health

import "time"

// Backend states.
const (
	Healthy   = "healthy"
	Degraded  = "degraded"
	Unhealthy = "unhealthy"
)

// Breaker states, as the events spell them.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// Alert statuses.
const (
	Firing   = "firing"
	Resolved = "resolved"
)

// Worker statuses in heartbeats.
const (
	WorkerRunning = "running"
	// WorkerStopped is the last heartbeat of a worker that shut down on
	// purpose: other workers do not report it as stale.
	WorkerStopped = "stopped"
)

// Latency is a backend's latency percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// BackendEvent is the body of health.backend.<name>.
type BackendEvent struct {
	Backend      string    `json:"backend"`
	State        string    `json:"state"`
	Breaker      string    `json:"breaker"`
	SuccessRate  float64   `json:"success_rate"` // 0..1 over the last 200 calls
	LatencyMS    Latency   `json:"latency_ms"`
	InFlight     int       `json:"in_flight"`
	Availability float64   `json:"availability"` // percent over the last hour
	Since        time.Time `json:"since"`        // when the state began
	Reason       string    `json:"reason"`
	Worker       string    `json:"worker"`
	// Kind says why it was sent: "change" or "heartbeat".
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`
}

// Tasks counts a worker's tasks.
type Tasks struct {
	Done         uint64 `json:"done"`
	Failed       uint64 `json:"failed"`
	DeadLettered uint64 `json:"dead_lettered"`
}

// WorkerEvent is the body of health.worker.<id>, a heartbeat.
type WorkerEvent struct {
	Worker        string    `json:"worker"`
	Status        string    `json:"status"`
	Version       string    `json:"version"`
	UptimeSeconds float64   `json:"uptime_s"`
	Tasks         Tasks     `json:"tasks"`
	CacheHitRatio float64   `json:"cache_hit_ratio"`
	InFlight      int64     `json:"in_flight"`
	Interval      float64   `json:"interval_s"` // heartbeats come this often
	At            time.Time `json:"at"`
}

// AlertEvent is the body of health.alert.<name>.
type AlertEvent struct {
	Alert     string    `json:"alert"`
	Status    string    `json:"status"`
	Backend   string    `json:"backend,omitempty"`
	Rule      string    `json:"rule"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Message   string    `json:"message"`
	Worker    string    `json:"worker"` // who saw it
	At        time.Time `json:"at"`
}

// Alert rules.
const (
	RuleBreakerOpen  = "breaker_open" // value, threshold: seconds open
	RuleAvailability = "availability" // value, threshold: percent
	RuleDLQSize      = "dlq_size"     // value, threshold: percent of the limit
	RuleWorkerStale  = "worker_stale" // value, threshold: seconds since the last heartbeat
)

// WorkerStats are what a worker heartbeat reports.
type WorkerStats struct {
	Done, Failed, DeadLettered uint64
	InFlight                   int64
	CacheHits, CacheMisses     uint64
}
