// Package client is Breakwater's front door for Go programs: it publishes
// tasks and waits for their results, reads results, takes the health
// snapshot, administers the dead-letter queue, manages periodic schedules
// and finds or cancels a task by id. The publisher command and any service
// that puts work on the bus are built on it, so a program never has to shell
// out to the CLI.
//
// A Client wraps a *nats.Conn the caller owns (and closes):
//
//	c, err := client.New(nc)
//	res, err := c.PublishAndWait(ctx, "echo", []byte(`{"hello":"world"}`))
//	fmt.Printf("%s\n", res.Body)
//
// What it builds on: the subjects and streams of the contract (bus.Topology,
// with an optional prefix), the schedule package for delayed and periodic
// tasks and for status and cancel, the dlq package for the DLQ admin and the
// health package for the events it decodes.
//
// Defaults (each changed by an Option): the contract's topology without a
// prefix, 10s for a request to the server (RequestTimeout) and 30s for a
// result (ResultTimeout). A default timeout applies only when the caller's
// context has no deadline of its own.
//
// Errors: bad input wraps ErrInvalid (nothing was sent), a bad Option wraps
// ErrInvalidOption, a task that failed for good is a *DeadLetteredError
// (errors.Is(err, ErrDeadLettered)), a missing result wraps ErrNoResult and
// a repeated task id within the stream's duplicate window wraps
// ErrDuplicate. A Client is safe for concurrent use and starts no goroutine
// that outlives a call.
package client
