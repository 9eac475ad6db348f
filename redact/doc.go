// Package redact keeps secrets out of everything Breakwater stores, logs or
// sends on: error texts (Text) and task headers (Headers, the one deny-list
// the DLQ, the attempt history, error replies and logs share).
//
// It is a leaf package (the standard library and nats.go only), so that every
// other package can use it without an import cycle.
package redact
