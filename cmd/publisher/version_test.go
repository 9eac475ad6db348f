package main

import (
	"testing"

	"github.com/breakwater/breakwater/internal/version"
)

// --version prints the build the worker reports too, and needs no server.
func TestVersion(t *testing.T) {
	r := runCmd(t, "", "--version")
	wantOK(t, r)
	if want := "publisher " + version.Get().String() + "\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
}
