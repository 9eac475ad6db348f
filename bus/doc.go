// Package bus is Breakwater's only door to NATS: it connects clients with the
// contract's options, runs the embedded server of the zero-setup mode, names
// the streams and subjects of the contract, and creates or updates the
// streams and the shared durable consumer idempotently.
//
// Everything above bus (pipeline, dlq, cmd) asks for the narrow jetstream
// role interfaces it needs; bus depends on nothing else of Breakwater.
package bus
