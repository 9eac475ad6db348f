package config

import "testing"

// TestDefaultIsValid checks that the config of a worker started without a
// file passes the validation a file would.
func TestDefaultIsValid(t *testing.T) {
	p := &parser{}
	p.validate(Default())
	if err := joinErrors(p.errs); err != nil {
		t.Errorf("got %v, want Default() to be valid", err)
	}
}
