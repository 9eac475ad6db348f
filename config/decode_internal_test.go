package config

import (
	"errors"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// bounds decodes itself from a mapping, as a type with more than one
// spelling would.
type bounds struct{ Min, Max int }

func (b *bounds) UnmarshalYAML(n *yaml.Node) error {
	var v struct {
		Min int `yaml:"min"`
		Max int `yaml:"max"`
	}
	if err := n.Decode(&v); err != nil {
		return err
	}
	b.Min, b.Max = v.Min, v.Max
	return nil
}

// TestUnmarshalerKeysAreKnown checks that the keys under a value an
// UnmarshalYAML method decodes are known to has and lineOf, so that
// defaults and messages treat them like any other key.
func TestUnmarshalerKeysAreKnown(t *testing.T) {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte("limits:\n  x:\n    min: 0\n    max: ~\n"), &root); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Limits map[string]bounds `yaml:"limits"`
	}
	p := &parser{keys: map[string]written{}}
	p.decode(root.Content[0], reflect.ValueOf(&out).Elem(), nil)
	if len(p.errs) != 0 || out.Limits["x"] != (bounds{}) {
		t.Fatalf("got %v, %+v; want no error, x zero", joinErrors(p.errs), out.Limits)
	}
	tests := []struct {
		give []string
		has  bool
		line int
	}{
		{[]string{"limits", "x", "min"}, true, 3},
		{[]string{"limits", "x", "max"}, false, 4},
		{[]string{"limits", "x", "step"}, false, 2},
	}
	for _, tt := range tests {
		if got := p.has(tt.give...); got != tt.has {
			t.Errorf("has(%q): got %t, want %t", tt.give, got, tt.has)
		}
		if got := p.lineOf(tt.give); got != tt.line {
			t.Errorf("lineOf(%q): got %d, want %d", tt.give, got, tt.line)
		}
	}
}

// TestUnmarshalerTypeErrors checks that the library's own type errors,
// returned by an UnmarshalYAML method, are reported at the key, without
// the library's "line N:".
func TestUnmarshalerTypeErrors(t *testing.T) {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte("limits:\n  x: {min: a, max: b}\n"), &root); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Limits map[string]bounds `yaml:"limits"`
	}
	p := &parser{file: "w.yaml", keys: map[string]written{}}
	p.decode(root.Content[0], reflect.ValueOf(&out).Elem(), nil)
	want := "w.yaml:2: limits.x: cannot unmarshal !!str `a` into int\n" +
		"w.yaml:2: limits.x: cannot unmarshal !!str `b` into int"
	if got := joinErrors(p.errs); got == nil || got.Error() != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

// level decodes itself from text only.
type level int

func (l *level) UnmarshalText(b []byte) error {
	switch string(b) {
	case "low":
		*l = 1
	case "high":
		*l = 2
	default:
		return errors.New(`want low or high, got "` + string(b) + `"`)
	}
	return nil
}

// TestTextUnmarshaler checks that a type decoding itself from text is
// decoded by its method, and that its error is reported at its key.
func TestTextUnmarshaler(t *testing.T) {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte("a: high\nb:\n  - low\n  - mid\n"), &root); err != nil {
		t.Fatal(err)
	}
	var out struct {
		A level   `yaml:"a"`
		B []level `yaml:"b"`
	}
	p := &parser{file: "w.yaml", keys: map[string]written{}}
	p.decode(root.Content[0], reflect.ValueOf(&out).Elem(), nil)
	want := `w.yaml:4: b[1]: want low or high, got "mid"`
	if got := joinErrors(p.errs); got == nil || got.Error() != want {
		t.Errorf("got %v, want %s", got, want)
	}
	if out.A != 2 || out.B[0] != 1 {
		t.Errorf("got %+v, want a high, b[0] low", out)
	}
}
