// Package dlq parks tasks that cannot be completed in the DLQ stream, with
// the reason and the evidence (Dlq-* headers), so that someone can decide
// later what to do with them. A task leaves TASKS only after its DLQ copy is
// stored; Writer.Write returns only once the server acknowledged the copy.
package dlq
