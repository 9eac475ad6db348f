// Package testkit holds what Breakwater's tests share, so that no test file
// writes it again:
//
//   - an embedded NATS server per test (StartServer, with options for what
//     tests vary: Base for auth and accounts, NoJetStream, MaxPayload,
//     SyncAlways, StoreDir and Port for restarts), connections to it
//     (Connect, JetStream) and a look at a stream (Msgs);
//   - nats-server processes and a cluster of them for the end-to-end tests
//     (StartNATS, StartNATSCluster), over any binary's process (StartProcess,
//     WaitHTTP, FreePort);
//   - the one poll-with-deadline helper (Eventually), and Consistently for
//     a state that must hold for a while;
//   - small stand-ins: a concurrency-safe output sink (Buffer, Lines) and a
//     worker's running tasks (Tasks).
//
// It imports no Breakwater package, so that the tests of every package,
// internal ones included, can import it without a cycle. Everything it
// starts ends with the test (t.Cleanup).
package testkit

import (
	"testing"
	"time"
)

// pollEvery is how often Eventually asks again.
const pollEvery = 10 * time.Millisecond

// Eventually asks cond until it holds, and fails the test with what and
// cond's last detail if it does not within timeout. Tests wait with it
// instead of sleeping for a time that a busy machine can outlast.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, detail)
		}
		time.Sleep(pollEvery)
	}
}

// sampleEvery is how often Consistently looks again.
const sampleEvery = 100 * time.Millisecond

// Consistently asks cond for d, at once and then every 100ms, and fails the
// test with what and cond's detail the first time it does not hold. It is
// for what must not happen (a schedule fires after its removal, a worker
// takes more than its share): a steady state sampled, not a change awaited.
func Consistently(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(sampleEvery) {
		if ok, detail := cond(); !ok {
			t.Fatalf("%s no longer held: %s", what, detail)
		}
		if time.Now().After(end) {
			return
		}
	}
}
