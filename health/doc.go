// Package health computes the health of a worker's backends from their
// real calls, breakers and active probes, publishes it as events on the
// HEALTH stream, raises alerts, and makes the worker a NATS micro service
// for status and control (StartAdmin).
//
// # Backend state
//
// A Monitor judges each backend after every recorded call, probe and
// breaker change, over the last 200 calls of this worker (a permanent
// error, handlers.IsPermanent, is the task's fault and counts as a
// success):
//
//	unhealthy  the breaker is open; or the active probe failed twice in a
//	           row; or under 50 % of the calls succeeded (at least 10 calls)
//	degraded   the breaker is half-open; or under 95 % succeeded (at least
//	           10 calls)
//	healthy    otherwise
//
// Latency does not enter the state: a call slower than its timeout fails
// and counts as a failure. Availability is the percentage of successful
// calls and probes over the last hour (one-minute slots), judged against
// Options.SLATarget.
//
// # Events
//
// health.backend.<name> gets one event per change of state or breaker
// ("kind":"change", even when several happen between two publishes) and a
// heartbeat every Interval ("kind":"heartbeat"). health.worker.<id> gets a
// heartbeat every Interval and, from a clean shutdown, a last one with
// "status":"stopped". Names are made subject tokens with Token.
//
// # Alerts
//
// health.alert.<name>, where name is <rule>.<token> or just the rule:
//
//	breaker_open.<backend>  this worker's breaker open longer than
//	                        BreakerOpenAlertAfter; resolves when not open
//	availability.<backend>  availability under SLATarget (at least 10 calls
//	                        and probes in the hour); resolves at or over it
//	dlq                     DLQ usage at 80 % of a non-zero limit; resolves
//	                        under 70 %
//	worker_stale.<id>       no heartbeat from another worker for 3 of its
//	                        intervals; resolves when heard again (the worker
//	                        itself resolves it when it is back), after its
//	                        "stopped" heartbeat, or after 24 h of silence
//	                        (the stream's retention). Needs Options.Conn on
//	                        every worker.
//
// Rules are checked every Interval, and an alert is stored once per
// firing and once per resolution however many workers judge it: a worker
// reads the subject's last event and publishes with the expected last
// subject sequence, so the first one wins and the stream refuses the
// others. The DLQ and stale-worker conditions are the same for every
// worker, so only one judges them: the live worker (heard within three
// intervals, itself included) with the smallest id. Backend alerts are
// judged by every worker on its own breaker and calls; one is resolved by
// the worker that fired it, or by any worker once that one stopped or went
// silent (another whose condition still holds fires it anew). The stream
// is the record: a core NATS subscriber to health.alert.> may, when two
// workers race, also see an event the stream refused.
//
// # Routing
//
// Usable (and Down) report a backend whose probe failed twice in a row,
// for a router to skip until a probe passes.
package health
