package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"time"
)

// ErrUnknownBuiltin is returned by Builtin for a name it does not know.
var ErrUnknownBuiltin = errors.New("unknown built-in handler")

// builtins are the handlers that run inside the worker. They exist for
// demos, smoke tests and benchmarks; a worker with no config serves each on
// the route of its own name.
var builtins = map[string]Backend{
	// echo answers with the payload unchanged.
	"echo": BackendFunc(func(_ context.Context, r *Request) (*Response, error) {
		return &Response{Body: r.Payload}, nil
	}),
	// upper answers with the payload in ASCII upper case.
	"upper": BackendFunc(func(_ context.Context, r *Request) (*Response, error) {
		b := make([]byte, len(r.Payload))
		for i, c := range r.Payload {
			if c >= 'a' && c <= 'z' {
				c -= 'a' - 'A'
			}
			b[i] = c
		}
		return &Response{Body: b}, nil
	}),
	// sleep waits for the duration given as payload ("250ms", or a JSON
	// string or {"duration": "..."}; default 1s), then echoes the payload.
	// It honours cancellation, so it exercises timeouts and draining.
	"sleep": BackendFunc(func(ctx context.Context, r *Request) (*Response, error) {
		d, err := sleepDuration(r.Payload)
		if err != nil {
			return nil, Permanent(err)
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return &Response{Body: r.Payload}, nil
		case <-ctx.Done():
			return nil, Transient(fmt.Errorf("sleep %s: %w", d, ctx.Err()))
		}
	}),
	// fail always fails permanently: the task is rejected.
	"fail": BackendFunc(func(context.Context, *Request) (*Response, error) {
		return nil, Permanent(errors.New("rejected by builtin:fail"))
	}),
	// unavailable always fails transiently, like a backend that is down.
	"unavailable": BackendFunc(func(context.Context, *Request) (*Response, error) {
		return nil, Transient(errors.New("builtin:unavailable is never available"))
	}),
	// crash kills the worker process (exit code 3) the moment a task
	// reaches it: a drill for crash loops (the max_deliveries path). It is
	// served only when a config names it, never by default.
	"crash": BackendFunc(func(_ context.Context, r *Request) (*Response, error) {
		fmt.Fprintf(os.Stderr, "builtin:crash: task %s kills the worker, as configured\n", r.TaskID)
		os.Exit(3)
		return nil, nil
	}),
}

// drills are the built-ins that must be asked for by name.
var drills = map[string]bool{"crash": true}

// Builtin returns the built-in handler called name.
func Builtin(name string) (Backend, error) {
	b, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (have %v)", ErrUnknownBuiltin, name, BuiltinNames())
	}
	return b, nil
}

// BuiltinNames lists the built-in handlers, sorted.
func BuiltinNames() []string { return slices.Sorted(maps.Keys(builtins)) }

// DefaultBuiltinNames lists the built-ins a worker without a config serves
// on routes of their own names: all but the drills (crash).
func DefaultBuiltinNames() []string {
	var out []string
	for _, n := range BuiltinNames() {
		if !drills[n] {
			out = append(out, n)
		}
	}
	return out
}

func sleepDuration(p []byte) (time.Duration, error) {
	if len(p) == 0 {
		return time.Second, nil
	}
	s := string(p)
	var js string
	var obj struct {
		Duration string `json:"duration"`
	}
	if json.Unmarshal(p, &js) == nil {
		s = js
	} else if json.Unmarshal(p, &obj) == nil && obj.Duration != "" {
		s = obj.Duration
	} else if ms, err := strconv.Atoi(s); err == nil {
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("sleep: payload %q is not a duration", truncate(s, 64))
	}
	return d, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
