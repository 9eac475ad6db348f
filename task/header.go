package task

// Header names of the contract. NATS headers are case-sensitive on the wire;
// these are the spellings Breakwater writes and reads.
const (
	// Set by publishers.
	HeaderMsgID        = "Nats-Msg-Id"
	HeaderID           = "Task-Id"
	HeaderReplyTo      = "Task-Reply-To"
	HeaderDeadline     = "Task-Deadline"
	HeaderCacheControl = "Cache-Control"

	// Set on results.
	HeaderType     = "Task-Type"
	HeaderStatus   = "Task-Status"
	HeaderBackend  = "Task-Backend"
	HeaderAttempts = "Task-Attempts"
	HeaderCache    = "Task-Cache"
	HeaderDuration = "Task-Duration"

	// Set on DLQ entries (and on error replies to Task-Reply-To).
	HeaderDLQReason          = "Dlq-Reason"
	HeaderDLQError           = "Dlq-Error"
	HeaderDLQAttempts        = "Dlq-Attempts"
	HeaderDLQBackends        = "Dlq-Backends"
	HeaderDLQOriginalSubject = "Dlq-Original-Subject"
	HeaderDLQOriginalSeq     = "Dlq-Original-Seq"
	HeaderDLQFailedAt        = "Dlq-Failed-At"
	HeaderDLQWorker          = "Dlq-Worker"
	HeaderDLQReplays         = "Dlq-Replays"
)

// Values of HeaderStatus and HeaderCache.
const (
	StatusOK    = "ok"
	StatusError = "error"
	CacheHit    = "hit"
	CacheMiss   = "miss"
	// BackendCache is Task-Backend of a result served by the cache.
	BackendCache = "cache"
)

// MaxIDLen is the longest task id the contract accepts.
const MaxIDLen = 128
