package config

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a length of time written as a Go duration string: "250ms",
// "10s", "1h30m". A negative duration is refused, and so is a bare number
// other than 0 ("30" could mean seconds or milliseconds). Its zero value
// is a key left out of the file; the default is applied to it.
type Duration time.Duration

// Size is a number of bytes, written as a plain integer (1048576) or with a
// unit: KiB, MiB, GiB, TiB (powers of 1024), KB, MB, GB, TB (powers of
// 1000) or B. Negative sizes are refused.
type Size int64

// Rate is a number of events per period, written "N/PERIOD" where PERIOD is
// s, m, h or a Go duration: "200/s", "10/m", "5/h", "50/100ms". N and the
// period must be greater than 0.
type Rate struct {
	N   int
	Per time.Duration
}

// UnmarshalYAML decodes a duration; an error names the line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a duration like 10s, got %s", describe(n))
	}
	if tag := n.ShortTag(); (tag == "!!int" || tag == "!!float") && n.Value != "0" {
		return typeErr(n, "want a duration with a unit (ms, s, m, h), got %s", describe(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*d = v
	return nil
}

// ParseDuration parses a Duration as written in a config (see Duration).
func ParseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("want a duration like 10s, 1m30s or 250ms, got %q", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("a duration must not be negative, got %q", s)
	}
	return Duration(v), nil
}

// String is the duration in Go syntax ("1m30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as a string, as it is read.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalText writes the duration as a string ("30s"), so that JSON and
// logs show it as written in a config.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a duration string (see Duration); it lets flags and
// JSON take the same syntax as the config file.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// UnmarshalYAML decodes a size; an error names the line.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a size like 64MiB, got %s", describe(n))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*s = Size(v)
	return nil
}

// ParseSize parses a number of bytes with an optional unit (see Size).
// Sizes above 2^62 bytes are refused.
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
	if err != nil || v < 0 || v > (1<<62)/mult || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("want a size like 1048576, 512KiB or 64MiB, got %q", str)
	}
	return v * mult, nil
}

// UnmarshalYAML decodes a rate; an error names the line.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a rate like 200/s, got %s", describe(n))
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*r = v
	return nil
}

// ParseRate parses "N/PERIOD" (see Rate).
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

// PerSecond is the rate in events per second; 0 for a zero Rate.
func (r Rate) PerSecond() float64 {
	if r.Per <= 0 {
		return 0
	}
	return float64(r.N) / r.Per.Seconds()
}

// String is the rate as written in a config: "200/s", "10/m", "50/100ms".
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

// MarshalYAML writes the rate as a string, as it is read.
func (r Rate) MarshalYAML() (any, error) { return r.String(), nil }

// MarshalText writes the rate as a string ("200/s").
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a rate string (see Rate).
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Concurrency is a backend's max_concurrency: a fixed bound on its calls in
// flight, written as an integer (0: unbounded), or a bound learned from the
// backend's latency, written "adaptive" or as a mapping with optional
// bounds:
//
//	max_concurrency: 50
//	max_concurrency: adaptive
//	max_concurrency: {adaptive: {min: 2, max: 100, initial: 10}}
type Concurrency struct {
	// Limit is the fixed bound; 0 when unbounded or adaptive.
	Limit int
	// Adaptive, when set, makes the bound adaptive within its limits.
	Adaptive *AdaptiveConcurrency
}

// AdaptiveConcurrency bounds an adaptive concurrency limit. Left out, Min is
// 1, Max 200 and Initial 20 (within Min and Max): failsafe-go's defaults.
type AdaptiveConcurrency struct {
	Min     int `yaml:"min" json:"min"`
	Max     int `yaml:"max" json:"max"`
	Initial int `yaml:"initial" json:"initial"`
}

// String is the value as written in a config: "50", "adaptive" or
// "adaptive(min 2, max 100, initial 10)".
func (c Concurrency) String() string {
	if a := c.Adaptive; a != nil {
		return fmt.Sprintf("adaptive(min %d, max %d, initial %d)", a.Min, a.Max, a.Initial)
	}
	return strconv.Itoa(c.Limit)
}

// MarshalJSON writes a fixed bound as a number, as it is read, and an
// adaptive one as {"adaptive": {"min", "max", "initial"}}.
func (c Concurrency) MarshalJSON() ([]byte, error) {
	if c.Adaptive != nil {
		return json.Marshal(map[string]*AdaptiveConcurrency{"adaptive": c.Adaptive})
	}
	return json.Marshal(c.Limit)
}

// MarshalYAML writes the value as it is read.
func (c Concurrency) MarshalYAML() (any, error) {
	if a := c.Adaptive; a != nil {
		return map[string]map[string]int{"adaptive": {"min": a.Min, "max": a.Max, "initial": a.Initial}}, nil
	}
	return c.Limit, nil
}
