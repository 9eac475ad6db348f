// Package resilience decides which backend serves a task and how a call is
// made: routes from task types to ordered backends, per-attempt timeouts and
// failover to the next backend on a transient failure. It reports every
// attempt so that the caller can explain a failure (DLQ history) and decide
// the task's fate from the last error's class.
package resilience
