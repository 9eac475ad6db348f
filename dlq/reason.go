package dlq

// Reason says why a task was dead-lettered (the Dlq-Reason header).
type Reason string

// The reasons of the contract.
const (
	// Exhausted: transient failures on every delivery allowed.
	Exhausted Reason = "exhausted"
	// Rejected: a backend failed the task permanently (a 4xx, a service
	// error about the request).
	Rejected Reason = "rejected"
	// InvalidResult: every answer failed validation or could not be stored.
	InvalidResult Reason = "invalid_result"
	// Expired: the task's Task-Deadline passed before it started.
	Expired Reason = "expired"
	// Poison: the task can never be parsed (bad id, header, payload size).
	Poison Reason = "poison"
	// NoRoute: no route serves the task's type.
	NoRoute Reason = "no_route"
	// MaxDeliveries: the task was delivered max_deliver times without
	// ever reporting an outcome (the worker crashed or hung each time).
	MaxDeliveries Reason = "max_deliveries"
	// Cancelled: an operator cancelled the task (publisher cancel) while
	// it waited or ran; a replay runs it after all.
	Cancelled Reason = "cancelled"
)
