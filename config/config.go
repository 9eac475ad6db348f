package config

import "time"

// Config is a worker's configuration file (see the contract's "Worker
// configuration"). Load decodes it strictly, fills defaults and validates it.
type Config struct {
	// Prefix, when set, is prepended to every subject and stream name.
	Prefix   string             `yaml:"prefix"`
	NATS     NATS               `yaml:"nats"`
	Streams  Streams            `yaml:"streams"`
	Worker   Worker             `yaml:"worker"`
	Health   Health             `yaml:"health"`
	Cache    Cache              `yaml:"cache"`
	DLQ      DLQ                `yaml:"dlq"`
	Backends map[string]Backend `yaml:"backends"`
	Routes   map[string]Route   `yaml:"routes"`
}

// NATS is how the worker connects. Flags and NATS_URL override URL.
type NATS struct {
	URL      string `yaml:"url"`
	Creds    string `yaml:"creds"`
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Token    string `yaml:"token"`
	TLS      TLS    `yaml:"tls"`
}

// TLS names the PEM files of a TLS connection.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Streams are the stream settings a worker applies when it creates or
// updates the streams.
type Streams struct {
	Replicas      int      `yaml:"replicas"`        // 1 to 5; 0 (unset): 1 on create, an existing stream keeps its own
	ResultsMaxAge Duration `yaml:"results_max_age"` // default 1h
	DLQMaxBytes   Size     `yaml:"dlq_max_bytes"`   // default 0: unlimited
}

// Worker sizes the task pipeline.
type Worker struct {
	Concurrency int      `yaml:"concurrency"` // default 64
	AckWait     Duration `yaml:"ack_wait"`    // default 30s
	MaxDeliver  int      `yaml:"max_deliver"` // default 5
	// MaxPayload makes larger task payloads poison. Default 0: the
	// server's limit only.
	MaxPayload Size `yaml:"max_payload"`
	// ReplySubjects are the subjects, or patterns with the NATS wildcards
	// "*" (one token) and ">" (the rest), on which a task's Task-Reply-To is
	// answered; a task asking for another is poison. Default ["_INBOX.>"];
	// an empty list answers none. Whatever it says, the worker never
	// answers on $JS.>, $KV.>, $O.>, $SYS.>, $SRV.>, breakwater.> or its own
	// stream subjects: that list is applied when tasks are parsed, not here.
	ReplySubjects []string `yaml:"reply_subjects"`
}

// DLQ configures what dead-lettering keeps.
type DLQ struct {
	// RedactHeaders are header names or "*" patterns ("X-Secret-*"),
	// matched regardless of case, kept out of DLQ copies, attempt history,
	// error replies and logs, on top of the built-in list (Authorization,
	// Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key, X-Auth-Token).
	// Default none.
	RedactHeaders []string `yaml:"redact_headers"`
}

// Health configures health events and alerts.
type Health struct {
	Interval              Duration `yaml:"interval"`                 // default 10s
	SLATarget             float64  `yaml:"sla_target"`               // percent, default 99.9
	BreakerOpenAlertAfter Duration `yaml:"breaker_open_alert_after"` // default 1m
}

// Cache sizes the in-process result cache.
type Cache struct {
	MaxSizeMB int `yaml:"max_size_mb"` // default 64
}

// Backend is one named backend: exactly one of HTTP, NATS or Builtin, plus
// the policy keys every kind takes.
type Backend struct {
	HTTP    *HTTPBackend `yaml:"http"`
	NATS    *NATSBackend `yaml:"nats"`
	Builtin string       `yaml:"builtin"`

	Timeout Duration `yaml:"timeout"` // per attempt; default 30s
	Retry   *Retry   `yaml:"retry"`
	Breaker *Breaker `yaml:"breaker"`
	// MaxConcurrency bounds the calls in flight: a number (0: unbounded)
	// or adaptive (see Concurrency).
	MaxConcurrency Concurrency `yaml:"max_concurrency"`
	RateLimit      *Rate       `yaml:"rate_limit"` // "200/s"; nil: unlimited
	Tags           []string    `yaml:"tags"`
	Auth           *Auth       `yaml:"auth"`
	// ForwardHeaders are the task headers passed on to the backend besides
	// the trace context, Content-Type and the Task-Id, Task-Type and
	// Task-Attempt the worker sets: header names or "*" patterns
	// ("X-Request-*"), matched regardless of case. Default none: no other
	// task header reaches a backend. Authorization, Proxy-Authorization and
	// Nats-* are never forwarded, even when a pattern matches them (see
	// handlers.NeverForwarded). Built-in handlers accept the key: they run
	// in the worker and pass no header on.
	ForwardHeaders []string `yaml:"forward_headers"`
}

// BackendKind names a backend's kind: the key of its block in the file.
type BackendKind string

// The kinds of backend.
const (
	KindHTTP    BackendKind = "http"
	KindNATS    BackendKind = "nats"
	KindBuiltin BackendKind = "builtin"
)

// Kind is KindHTTP, KindNATS or KindBuiltin.
func (b Backend) Kind() BackendKind {
	switch {
	case b.HTTP != nil:
		return KindHTTP
	case b.NATS != nil:
		return KindNATS
	default:
		return KindBuiltin
	}
}

// HTTPBackend is a backend reached by HTTP POST.
type HTTPBackend struct {
	URL       string            `yaml:"url"`
	HealthURL string            `yaml:"health_url"`
	Headers   map[string]string `yaml:"headers"`
}

// NATSBackend is a backend reached by NATS request-reply.
type NATSBackend struct {
	Subject string `yaml:"subject"`
}

// Auth is how a backend authenticates its calls: a static bearer token
// (from a file or an environment variable) or OAuth2 client credentials,
// one of them.
type Auth struct {
	BearerTokenFile string  `yaml:"bearer_token_file"`
	BearerTokenEnv  string  `yaml:"bearer_token_env"`
	OAuth2          *OAuth2 `yaml:"oauth2" json:"OAuth2,omitempty"`
}

// OAuth2 is the client credentials grant of an HTTP backend: its calls
// carry a bearer token requested from TokenURL, shared by the backend's
// calls and refreshed before it expires. Exactly one source of the secret
// must be set; the file (a relative path is resolved against the config
// file's directory and stored back resolved) must be readable when the
// config is loaded, and is read again when it changes, so a rotated secret
// needs no restart.
type OAuth2 struct {
	TokenURL         string   `yaml:"token_url"`
	ClientID         string   `yaml:"client_id"`
	ClientSecretFile string   `yaml:"client_secret_file"`
	ClientSecretEnv  string   `yaml:"client_secret_env"`
	Scopes           []string `yaml:"scopes"`
	// EndpointParams are further parameters of the token request
	// (audience, resource, ...); they may not set scope, grant_type,
	// client_id or client_secret.
	EndpointParams map[string]string `yaml:"endpoint_params"`
}

// Retry is a backend's retry policy.
type Retry struct {
	MaxAttempts int      `yaml:"max_attempts"` // default 3
	Backoff     Duration `yaml:"backoff"`      // default 100ms
	MaxBackoff  Duration `yaml:"max_backoff"`  // default 30s
	Jitter      float64  `yaml:"jitter"`       // 0..1, default 0.2
	// Budget, when above 0, bounds the backend's retries to that share of
	// its calls (0.2: at most one retry for every five first tries), so
	// that an outage does not multiply the load by max_attempts. Default
	// 0: no budget.
	Budget float64 `yaml:"budget" json:"Budget,omitempty"`
}

// Breaker is a backend's circuit breaker.
type Breaker struct {
	FailureThreshold int      `yaml:"failure_threshold"` // consecutive failures; default 3
	FailureRate      float64  `yaml:"failure_rate"`      // 0..1 over Period; replaces the count when set
	MinCalls         int      `yaml:"min_calls"`         // with FailureRate; default 10
	Period           Duration `yaml:"period"`            // with FailureRate; default 1m
	Delay            Duration `yaml:"delay"`             // open before half-open; default 10s
	SuccessThreshold int      `yaml:"success_threshold"` // default 1
	HalfOpenMaxCalls int      `yaml:"half_open_max_calls"`
}

// Route maps a task type to its backends.
type Route struct {
	// Backends in order: names of Config.Backends, "builtin:NAME", or
	// "tag:NAME" for every backend with that tag.
	Backends   []string       `yaml:"backends"`
	Strategy   string         `yaml:"strategy"` // failover (default), round_robin, weighted, least_latency
	Weights    map[string]int `yaml:"weights"`
	Deadline   Duration       `yaml:"deadline"` // total per task; 0: none
	HedgeAfter Duration       `yaml:"hedge_after"`
	Cache      *RouteCache    `yaml:"cache"`
	Validate   *Validate      `yaml:"validate"`
}

// RouteCache caches a route's successful results.
type RouteCache struct {
	TTL        Duration `yaml:"ttl"`
	KeyHeaders []string `yaml:"key_headers"`
	Shared     bool     `yaml:"shared"`
}

// Validate checks a backend's answer before it counts as a success.
type Validate struct {
	JSONSchema  string `yaml:"json_schema"`
	RequireJSON bool   `yaml:"require_json"`
}

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
