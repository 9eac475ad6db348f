// Package cliflag holds what the worker's and the publisher's command lines
// share beyond pflag and cobra themselves.
package cliflag

import "github.com/spf13/pflag"

// PlainBools makes every boolean flag of fs print as `--name` in the help,
// as it did before pflag 1.1 (which prints `--name[=true|false]`). The flag
// still takes `--name`, `--name=true` and `--name=false`.
func PlainBools(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if _, done := f.Value.(plainBool); !done && f.Value.Type() == "bool" {
			f.Value = plainBool{f.Value}
			if f.NoOptDefVal == "" {
				f.NoOptDefVal = "true"
			}
		}
	})
}

// plainBool is a boolean flag value that does not say it is one (no
// IsBoolFlag), so the help prints no [=true|false]; NoOptDefVal "true"
// keeps `--name` alone working.
type plainBool struct{ v pflag.Value }

func (b plainBool) String() string     { return b.v.String() }
func (b plainBool) Set(s string) error { return b.v.Set(s) }
func (b plainBool) Type() string       { return b.v.Type() }
