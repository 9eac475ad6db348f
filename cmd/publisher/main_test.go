package main

import (
	"strings"
	"testing"
)

// unreachable is a URL no test server listens on: usage errors must be
// reported before any connection is tried.
const unreachable = "nats://127.0.0.1:1"

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"unknown flag", []string{"publish", "echo", "--bogus"}, "unknown flag: --bogus"},
		{"unknown global flag", []string{"--bogus", "x", "results"}, "unknown flag: --bogus"},
		{"unknown command", []string{"publsh", "echo"}, `unknown command "publsh" for "publisher" (did you mean publish?)`},
		{"no command", []string{}, "missing command"},
		{"publish without type", []string{"publish"}, "publish: want TYPE [DATA | @FILE | -], got 0 argument(s)"},
		{"publish too many args", []string{"publish", "echo", "a", "b"}, "got 3 argument(s)"},
		{"wildcard type", []string{"publish", "a.*"}, `task type "a.*" has '*'`},
		{"empty type token", []string{"publish", "a..b"}, "empty token"},
		{"space in type", []string{"publish", "a b"}, `has ' '`},
		{"bad id", []string{"publish", "echo", "--id", "a.b"}, `--id: task id "a.b" has '.'`},
		{"long id", []string{"publish", "echo", "--id", strings.Repeat("x", 129)}, "exceeds 128"},
		{"header without =", []string{"publish", "echo", "--header", "K"}, `--header "K": want K=V`},
		{"header empty name", []string{"publish", "echo", "--header", "=v"}, "empty header name"},
		{"header reserved", []string{"publish", "echo", "--header", "Task-Id=x"}, "set by the publisher; use --id"},
		{"header line break", []string{"publish", "echo", "--header", "K=a\nb"}, "line break"},
		{"wait with reply-to", []string{"publish", "echo", "--wait", "--header", "Task-Reply-To=x"}, "--wait sets Task-Reply-To"},
		{"file with type", []string{"publish", "--file", "x.jsonl", "echo"}, "takes no TYPE"},
		{"file with wait", []string{"publish", "--file", "x.jsonl", "--wait"}, "--wait applies to one task"},
		{"file with id", []string{"publish", "--file", "x.jsonl", "--id", "a"}, "--id applies to one task"},
		{"flag needs value", []string{"publish", "echo", "--id"}, "flag needs an argument: --id"},
		{"bad timeout", []string{"publish", "echo", "--timeout", "soon"}, `invalid argument "soon" for "--timeout"`},
		{"bad prefix", []string{"--prefix", "a.b", "publish", "echo"}, `invalid prefix "a.b"`},
		{"result args", []string{"result", "echo"}, "result: want TYPE ID, got 1 argument(s)"},
		{"result bad id", []string{"result", "echo", "a b"}, `task id "a b"`},
		{"results bad type", []string{"results", "a.>"}, `has '>'`},
		{"results too many", []string{"results", "a", "b"}, "got 2 argument(s)"},
		{"bench count", []string{"bench", "--count", "0"}, "--count must be at least 1"},
		{"bench count value", []string{"bench", "--count", "many"}, `invalid argument "many" for "--count"`},
		{"bench concurrency", []string{"bench", "--concurrency", "0"}, "--concurrency must be at least 1"},
		{"bench rate", []string{"bench", "--rate", "-1"}, "--rate must be"},
		{"bench args", []string{"bench", "x"}, "bench: want no arguments"},
		{"tls cert without key", []string{"publish", "echo", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", append([]string{"--nats-url", unreachable}, tt.give...)...)
			wantFail(t, r, exitUsage, tt.want)
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		give []string
		want string
	}{
		{[]string{"--help"}, "publisher [command]"},
		{[]string{"publish", "--help"}, "--wait"},
		{[]string{"help", "bench"}, "--concurrency"},
		{[]string{"results", "-h"}, "--all"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			r := runCmd(t, "", tt.give...)
			wantOK(t, r)
			if !strings.Contains(r.stdout, tt.want) {
				t.Errorf("stdout %q, want it to contain %q", r.stdout, tt.want)
			}
			if r.stderr != "" {
				t.Errorf("stderr %q, want nothing", r.stderr)
			}
		})
	}
}

func TestConnectFailure(t *testing.T) {
	r := runCmd(t, "", "publish", "echo", "hi", "--nats-url", unreachable, "--timeout", "2s")
	wantFail(t, r, exitFailure, "publisher: connect to nats://127.0.0.1:1")
}

func TestOneLine(t *testing.T) {
	tests := []struct{ give, want string }{
		{"plain", "plain"},
		{"first\nsecond", "first"},
		{"unknown command \"x\" for \"publisher\"\n\nDid you mean this?\n\tpublish\n\tresult\n",
			`unknown command "x" for "publisher" (did you mean publish or result?)`},
	}
	for _, tt := range tests {
		if got := oneLine(tt.give); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

// Boolean flags print as --name, not pflag's --name[=true|false], in
// every command's help, and still take --name alone.
func TestHelpPlainBools(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"publish", "--help"}, {"dlq", "replay", "--help"}, {"health", "--help"}} {
		r := runCmd(t, "", args...)
		if r.code != 0 || strings.Contains(r.stdout, "[=true|false]") {
			t.Errorf("%v: exit %d, help:\n%s", args, r.code, r.stdout)
		}
	}
}
