// Package loadgen generates load on a Breakwater installation and measures
// it: Run publishes tasks from several goroutines, each with a window of
// asynchronous publishes, times every task from its publish to the arrival
// of its result, and reports throughput and end-to-end latency percentiles.
// The publisher's bench command prints its Report.
//
// Results are seen on a core subscription to their subjects, made before
// the first publish: no consumer, no acks, and the arrival time is the
// client's. Every payload is unique, so that no result cache answers in
// place of the backend.
package loadgen
