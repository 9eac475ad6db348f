// Package testkit holds what Breakwater's tests share, so that no test file
// writes it again: for now the one poll-with-deadline helper.
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
