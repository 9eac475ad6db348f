package cliflag_test

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/breakwater/breakwater/internal/cliflag"
)

func TestPlainBools(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--wait"}, true}, {[]string{"--wait=false"}, false}, {[]string{"--wait=true"}, true}} {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		wait := fs.Bool("wait", false, "wait for the result")
		cliflag.PlainBools(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if *wait != tt.want {
			t.Errorf("%v: got %v, want %v", tt.args, *wait, tt.want)
		}
		if u := fs.FlagUsages(); strings.Contains(u, "[=") || !strings.Contains(u, "--wait ") {
			t.Errorf("usage %q", u)
		}
	}
}
