// Package schedule runs tasks later and periodically on the NATS server's
// own scheduler (nats-server 2.12 and newer: message schedules, ADR-51),
// and finds and cancels tasks by id.
//
// A delayed task is a schedule message on schedules.once.<task-id> with
// Nats-Schedule: @at <RFC 3339> and Nats-Schedule-Target: tasks.<type>; a
// periodic schedule is one on schedules.every.<name> with @every <interval>
// or a 6-field cron pattern (Nats-Schedule-Time-Zone for its zone), one
// message per name (a roll-up: adding a name again replaces it). Both are
// stored in TASKS, since the server fires a schedule only into its own
// stream, and the server itself publishes the task when it is due: no
// worker or leader keeps time, and schedules survive restarts and
// replicate with the stream.
//
// The server copies every header of the schedule message into each task it
// fires. A delayed task therefore keeps its Task-Id; the firings of a
// periodic schedule would all share one, so the worker gives each the id
// "<name>-<unix seconds of the firing>" (task.(*Task).Firing; FiringID
// here): each firing has its own result and its own DLQ entry.
//
// Client is the front door for programs (the publisher command and the web
// console are built on it): Add, Get, List, Remove and LastFired for
// periodic schedules, Delay and DelayMsg for delayed tasks, Status for
// where a task is (scheduled, pending, running, done, dead-lettered), and
// Cancel, which dead-letters a scheduled or pending task with reason
// cancelled before removing it, or asks the worker running it to stop it
// (the admin plane's task.cancel). Bad input is an error wrapping
// ErrInvalid, and then nothing is stored.
package schedule
