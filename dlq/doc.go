// Package dlq parks tasks that cannot be completed in the DLQ stream, with
// the reason and the evidence (Dlq-* headers), so that someone can decide
// later what to do with them, and makes sure no task is left stranded in
// TASKS on the way.
//
// A task leaves TASKS only after its DLQ copy is stored: Writer.Store
// returns only once the server acknowledged the copy. The copy:
//   - is deduplicated on the task's TASKS stream sequence (DedupeID), never
//     on the task's own Nats-Msg-Id, so a reused id cannot make a second
//     dead-letter a silent duplicate, and a duplicate (this very task
//     stored before) is a success;
//   - never carries a header of the deny-list (redact.Headers: credentials,
//     plus dlq.redact_headers), a Dlq-* header the task came with (the
//     Writer writes its own; Dlq-Replays is taken only as ReplayCount
//     allows) or a Nats-* header (instructions to the server: a stored
//     Nats-Expected-Stream would fail every DLQ publish); error texts are
//     redacted the same way;
//   - is made to fit the server's max_payload: Dlq-History is trimmed
//     first, then the payload moves to the DLQ_PAYLOADS object store and
//     the entry names it (HeaderPayloadObject); Payloads.Payload or
//     LoadPayload gives it back, DeletePayload removes it after the entry.
//
// Tasks the consumer gave up on without an outcome (max_deliver reached
// while the worker crashed or hung) are moved by the CrashLoopWatcher:
// from the server's max-deliveries advisories, captured by the ADVISORIES
// stream even while no worker runs, and by a reconcile for any left
// without one.
//
// Admin lists, replays and purges entries; History keeps the attempts of
// a task between its deliveries.
package dlq
