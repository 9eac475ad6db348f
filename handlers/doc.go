// Package handlers holds the backends a task can be routed to: built-in
// handlers that run in the worker, HTTP endpoints and NATS request-reply
// services. Every kind implements Backend and classifies its failures as
// transient (worth another try, maybe elsewhere) or permanent (the task
// itself is at fault), so that one place in the worker can decide a task's
// fate from the class alone.
package handlers
