package handlers

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestBuiltins(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    string
		wantErr error
	}{
		{"echo", "Hello, wörld", "Hello, wörld", nil},
		{"echo", "", "", nil},
		{"upper", "Hello, wörld 42", "HELLO, WöRLD 42", nil},
		{"sleep", "1ms", "1ms", nil},
		{"sleep", "nonsense", "", ErrPermanent},
		{"fail", "x", "", ErrPermanent},
		{"unavailable", "x", "", ErrTransient},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+tc.give, func(t *testing.T) {
			be, err := Builtin(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := be.Call(context.Background(), &Request{Payload: []byte(tc.give)})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(resp.Body) != tc.want {
				t.Fatalf("got %v, %v, want body %q", resp, err, tc.want)
			}
		})
	}
}

func TestBuiltinUnknown(t *testing.T) {
	if _, err := Builtin("nope"); !errors.Is(err, ErrUnknownBuiltin) {
		t.Fatalf("got %v, want ErrUnknownBuiltin", err)
	}
	want := []string{"echo", "fail", "sleep", "unavailable", "upper"}
	if got := DefaultBuiltinNames(); !slices.Equal(got, want) {
		t.Fatalf("DefaultBuiltinNames: got %v, want %v (never the crash drill)", got, want)
	}
	if got := BuiltinNames(); !slices.Equal(got, append([]string{"crash"}, want...)) {
		t.Fatalf("BuiltinNames: got %v", got)
	}
}

func TestSleepHonoursDeadline(t *testing.T) {
	be, _ := Builtin("sleep")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := be.Call(ctx, &Request{}) // empty payload: the 1s default
	if !errors.Is(err, ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want transient DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("returned after %v, want soon after the 20ms deadline", d)
	}
}

func TestSleepDuration(t *testing.T) {
	tests := []struct {
		give    string
		want    time.Duration
		wantErr bool
	}{
		{"", time.Second, false},
		{"250ms", 250 * time.Millisecond, false},
		{"1m30s", 90 * time.Second, false},
		{`"2s"`, 2 * time.Second, false},
		{`{"duration":"3s"}`, 3 * time.Second, false},
		{"150", 150 * time.Millisecond, false}, // bare number: milliseconds
		{"0", 0, false},
		{"-1s", 0, true},
		{`{"duration":""}`, 0, true},
		{`{"other":"1s"}`, 0, true},
		{"soon", 0, true},
		{`"soon"`, 0, true},
	}
	for _, tc := range tests {
		got, err := sleepDuration([]byte(tc.give))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("sleepDuration(%q): got %v, %v; want %v, error %v", tc.give, got, err, tc.want, tc.wantErr)
		}
	}
}
