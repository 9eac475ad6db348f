package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a YAML duration such as "250ms", "10s" or "1h30m".
type Duration time.Duration

// Size is a number of bytes, written as an integer or with a unit:
// "512KiB", "64MiB", "1GiB", "10MB", "100KB".
type Size int64

// Rate is an event rate such as "200/s", "10/m", "5/h" or "50/100ms".
type Rate struct {
	N   int
	Per time.Duration
}

// typeErr reports a bad scalar the way yaml.v3 reports its own type errors,
// so that decoding goes on and every problem is reported at once.
func typeErr(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: "+format, append([]any{n.Line}, args...)...)}}
}

// UnmarshalYAML decodes a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return typeErr(n, "want a duration like 10s, got %s", describe(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeErr(n, "want a duration like 10s or 1m30s, got %q", n.Value)
	}
	if v < 0 {
		return typeErr(n, "duration must not be negative, got %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String is the duration in Go syntax.
func (d Duration) String() string { return time.Duration(d).String() }

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// UnmarshalYAML decodes a size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return typeErr(n, "want a size like 64MiB, got %s", describe(n))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*s = Size(v)
	return nil
}

// ParseSize parses an integer number of bytes with an optional unit.
func ParseSize(str string) (int64, error) {
	s := strings.TrimSpace(str)
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("want a size like 1048576, 512KiB or 64MiB, got %q", str)
	}
	return v * mult, nil
}

// UnmarshalYAML decodes a rate.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return typeErr(n, "want a rate like 200/s, got %s", describe(n))
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*r = v
	return nil
}

// ParseRate parses "N/UNIT" where UNIT is s, m, h or a duration.
func ParseRate(s string) (Rate, error) {
	bad := fmt.Errorf("want a rate like 200/s, 10/m or 50/100ms, got %q", s)
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, bad
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n <= 0 {
		return Rate{}, bad
	}
	var d time.Duration
	switch per = strings.TrimSpace(per); per {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	default:
		if d, err = time.ParseDuration(per); err != nil || d <= 0 {
			return Rate{}, bad
		}
	}
	return Rate{N: n, Per: d}, nil
}

// PerSecond is the rate in events per second.
func (r Rate) PerSecond() float64 {
	if r.Per <= 0 {
		return 0
	}
	return float64(r.N) / r.Per.Seconds()
}

// String is the rate as written in a config.
func (r Rate) String() string {
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.N)
	case time.Minute:
		return fmt.Sprintf("%d/m", r.N)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.N)
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// MarshalYAML writes the rate as a string.
func (r Rate) MarshalYAML() (any, error) { return r.String(), nil }

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if n.Tag == "!!null" {
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}
