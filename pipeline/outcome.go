package pipeline

import (
	"errors"
	"time"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
)

// Sentinel errors of the pipeline itself, for Decide.
var (
	// ErrExpired: the task's Task-Deadline passed before it started.
	ErrExpired = errors.New("task deadline passed")
	// ErrInvalidResult: the answer cannot be stored (too large) or failed
	// validation (the same sentinel as resilience.ErrInvalidResult).
	ErrInvalidResult = resilience.ErrInvalidResult
	// ErrShutdown: the worker stopped before the task finished; the task
	// goes back to the stream at once for another worker.
	ErrShutdown = errors.New("worker shutting down")
	// ErrMaxDeliveries: the task came back beyond MaxDeliver, in the
	// consumer's headroom: an earlier delivery ended without an outcome
	// (the worker crashed, or its dead-letter failed). It is dead-lettered
	// as max_deliveries without another backend call.
	ErrMaxDeliveries = errors.New("delivered more often than max_deliver without an outcome")
	// ErrCancelled: an operator cancelled the running task (Worker.Cancel);
	// it is dead-lettered as cancelled.
	ErrCancelled = errors.New("task cancelled")
)

// Outcome is how one delivery of a task ended (Settled.Outcome): the
// outcome label of the task metrics, so the values never change.
type Outcome string

// Outcomes of Settled.
const (
	// OutcomeDone: the result is stored and the task acked.
	OutcomeDone Outcome = "done"
	// OutcomeDeadLettered: the DLQ copy is stored and the task termed.
	OutcomeDeadLettered Outcome = "dead_lettered"
	// OutcomeRedelivered: handed back to the stream for a later try.
	OutcomeRedelivered Outcome = "redelivered"
	// OutcomeDuplicate: a redelivery whose result was already stored,
	// acked without a backend call.
	OutcomeDuplicate Outcome = "duplicate"
)

// Outcomes lists every Outcome.
func Outcomes() []Outcome {
	return []Outcome{OutcomeDone, OutcomeDeadLettered, OutcomeRedelivered, OutcomeDuplicate}
}

// Action is what happens to a task message.
type Action int

// The three fates of a task.
const (
	// Ack: done; the message leaves TASKS.
	Ack Action = iota
	// Redeliver: NakWithDelay(Fate.Delay); the task will be tried again.
	Redeliver
	// DeadLetter: store a copy in the DLQ with Fate.Reason, then Term.
	DeadLetter
)

func (a Action) String() string {
	switch a {
	case Ack:
		return "ack"
	case Redeliver:
		return "redeliver"
	default:
		return "dead-letter"
	}
}

// Fate is the decision about one delivery of a task.
type Fate struct {
	Action Action
	Delay  time.Duration // with Redeliver
	Reason dlq.Reason    // with DeadLetter
}

// Redelivery backoff bounds: the n-th redelivery waits base·2^(n-1),
// at most max, or the backend's Retry-After when that is longer.
const (
	redeliverBase = time.Second
	redeliverMax  = 30 * time.Second
)

// Decide maps the error of a delivery to the task's fate. It is the only
// place that does: delivered is the delivery count (from 1) and maxDeliver
// the consumer's limit (≤0: unlimited).
//
//	nil                          → Ack
//	ErrCancelled                 → DeadLetter cancelled
//	ErrMaxDeliveries             → DeadLetter max_deliveries
//	ErrShutdown                  → Redeliver now (another worker takes it)
//	task.ErrPoison               → DeadLetter poison
//	ErrExpired                   → DeadLetter expired
//	resilience.ErrNoRoute        → DeadLetter no_route
//	ErrInvalidResult             → DeadLetter invalid_result
//	handlers.ErrPermanent        → DeadLetter rejected
//	anything else (transient)    → Redeliver with backoff, or DeadLetter
//	                               exhausted on the last delivery
func Decide(err error, delivered, maxDeliver int) Fate {
	switch {
	case err == nil:
		return Fate{Action: Ack}
	case errors.Is(err, ErrCancelled):
		return Fate{Action: DeadLetter, Reason: dlq.Cancelled}
	case errors.Is(err, ErrMaxDeliveries):
		return Fate{Action: DeadLetter, Reason: dlq.MaxDeliveries}
	case errors.Is(err, ErrShutdown):
		return Fate{Action: Redeliver}
	case errors.Is(err, task.ErrPoison):
		return Fate{Action: DeadLetter, Reason: dlq.Poison}
	case errors.Is(err, ErrExpired):
		return Fate{Action: DeadLetter, Reason: dlq.Expired}
	case errors.Is(err, resilience.ErrNoRoute):
		return Fate{Action: DeadLetter, Reason: dlq.NoRoute}
	case errors.Is(err, ErrInvalidResult):
		return Fate{Action: DeadLetter, Reason: dlq.InvalidResult}
	case handlers.IsPermanent(err):
		return Fate{Action: DeadLetter, Reason: dlq.Rejected}
	}
	if maxDeliver > 0 && delivered >= maxDeliver {
		return Fate{Action: DeadLetter, Reason: dlq.Exhausted}
	}
	return Fate{Action: Redeliver, Delay: redeliverDelay(delivered, resilience.RetryAfter(err))}
}

func redeliverDelay(delivered int, retryAfter time.Duration) time.Duration {
	d := redeliverBase
	for i := 1; i < delivered && d < redeliverMax; i++ {
		d *= 2
	}
	d = min(d, redeliverMax)
	return max(d, retryAfter)
}
