// Package pipeline is the worker loop: it pulls tasks from the shared
// durable consumer into a bounded pool of goroutines, routes each task to a
// backend, stores the result, and settles the task (ack, redeliver later or
// dead-letter) in one place, Decide, from the class of the error.
package pipeline
