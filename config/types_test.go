package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/breakwater/breakwater/config"
)

// decodeField decodes "v: <give>" into a struct holding one T, the way
// Parse does.
func decodeField[T any](give string) (T, error) {
	var out struct {
		V T `yaml:"v"`
	}
	err := yaml.Unmarshal([]byte("v: "+give+"\n"), &out)
	return out.V, err
}

func TestDuration(t *testing.T) {
	tests := []struct {
		give    string
		want    time.Duration
		wantErr string // part of the error; "" for none
	}{
		{give: "10s", want: 10 * time.Second},
		{give: "1h30m", want: 90 * time.Minute},
		{give: "250ms", want: 250 * time.Millisecond},
		{give: `"2m"`, want: 2 * time.Minute},
		{give: "0", want: 0},
		{give: "0s", want: 0},
		{give: "-1s", wantErr: `must not be negative, got "-1s"`},
		{give: "30", wantErr: `want a duration with a unit (ms, s, m, h), got "30"`},
		{give: "1.5", wantErr: "with a unit"},
		{give: `"30"`, wantErr: `want a duration like 10s, 1m30s or 250ms, got "30"`},
		{give: "soon", wantErr: `got "soon"`},
		{give: "true", wantErr: `got "true"`},
		{give: "[1s]", wantErr: "got a list"},
		{give: "{s: 1}", wantErr: "got a mapping"},
		{give: "9999999999h", wantErr: "want a duration"},
	}
	for _, tt := range tests {
		got, err := decodeField[config.Duration](tt.give)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "line 1") {
				t.Errorf("%s: got error %v, want one at line 1 containing %q", tt.give, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.D() != tt.want {
			t.Errorf("%s: got %s, %v; want %s", tt.give, got, err, tt.want)
		}
	}
}

func TestDurationText(t *testing.T) {
	var d config.Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.D() != 90*time.Second {
		t.Errorf("UnmarshalText(1m30s): got %s, %v; want 1m30s", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1m30s" {
		t.Errorf("MarshalText: got %q, want 1m30s", b)
	}
	if err := d.UnmarshalText([]byte("-5s")); err == nil {
		t.Error("UnmarshalText(-5s): got no error, want one")
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		give    string
		want    int64
		wantErr bool
	}{
		{give: "1048576", want: 1 << 20},
		{give: "0", want: 0},
		{give: "512KiB", want: 512 << 10},
		{give: "64MiB", want: 64 << 20},
		{give: "1GiB", want: 1 << 30},
		{give: "2TiB", want: 2 << 40},
		{give: "10MB", want: 10e6},
		{give: "1GB", want: 1e9},
		{give: "100KB", want: 1e5},
		{give: "7B", want: 7},
		{give: "64 MiB", want: 64 << 20},
		{give: "", wantErr: true},
		{give: "-1", wantErr: true},
		{give: "+1", wantErr: true},
		{give: "1.5MiB", wantErr: true},
		{give: "MiB", wantErr: true},
		{give: "12XB", wantErr: true},
		{give: "64mib", wantErr: true},
		{give: "9999999999TiB", wantErr: true},
	}
	for _, tt := range tests {
		got, err := config.ParseSize(tt.give)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseSize(%q): got %d, want an error", tt.give, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q): got %d, %v; want %d", tt.give, got, err, tt.want)
		}
	}
	if _, err := decodeField[config.Size]("[1]"); err == nil || !strings.Contains(err.Error(), "got a list") {
		t.Errorf("Size from a list: got %v, want an error saying so", err)
	}
	if got, err := decodeField[config.Size]("64MiB"); err != nil || got != 64<<20 {
		t.Errorf("Size from YAML 64MiB: got %d, %v; want %d", got, err, 64<<20)
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		give      string
		want      config.Rate
		perSecond float64
		str       string
		wantErr   bool
	}{
		{give: "200/s", want: config.Rate{N: 200, Per: time.Second}, perSecond: 200, str: "200/s"},
		{give: "10/m", want: config.Rate{N: 10, Per: time.Minute}, perSecond: 10.0 / 60, str: "10/m"},
		{give: "5/h", want: config.Rate{N: 5, Per: time.Hour}, perSecond: 5.0 / 3600, str: "5/h"},
		{give: "50/100ms", want: config.Rate{N: 50, Per: 100 * time.Millisecond}, perSecond: 500, str: "50/100ms"},
		{give: "3/1s", want: config.Rate{N: 3, Per: time.Second}, perSecond: 3, str: "3/s"},
		{give: " 7 / s ", want: config.Rate{N: 7, Per: time.Second}, perSecond: 7, str: "7/s"},
		{give: "200", wantErr: true},
		{give: "0/s", wantErr: true},
		{give: "-1/s", wantErr: true},
		{give: "x/s", wantErr: true},
		{give: "5/0s", wantErr: true},
		{give: "5/-1s", wantErr: true},
		{give: "5/lightyear", wantErr: true},
		{give: "/s", wantErr: true},
	}
	for _, tt := range tests {
		got, err := config.ParseRate(tt.give)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseRate(%q): got %v, want an error", tt.give, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q): got %v, %v; want %v", tt.give, got, err, tt.want)
			continue
		}
		if ps := got.PerSecond(); ps < tt.perSecond*0.999999 || ps > tt.perSecond*1.000001 {
			t.Errorf("ParseRate(%q).PerSecond(): got %g, want %g", tt.give, ps, tt.perSecond)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseRate(%q).String(): got %q, want %q", tt.give, s, tt.str)
		}
		if back, err := config.ParseRate(got.String()); err != nil || back != got {
			t.Errorf("ParseRate(%q) does not round-trip: got %v, %v", got.String(), back, err)
		}
	}
	if got := (config.Rate{}).PerSecond(); got != 0 {
		t.Errorf("zero Rate PerSecond: got %g, want 0", got)
	}
	if _, err := decodeField[config.Rate]("{n: 1}"); err == nil || !strings.Contains(err.Error(), "got a mapping") {
		t.Errorf("Rate from a mapping: got %v, want an error saying so", err)
	}
	var te *yaml.TypeError
	if _, err := decodeField[config.Rate]("fast"); !errors.As(err, &te) {
		t.Errorf("Rate from fast: got %T %v, want a *yaml.TypeError so decoding goes on", err, err)
	}
}
