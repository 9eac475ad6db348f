package resilience_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

func answering(body string) handlers.Backend {
	return handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
		return &handlers.Response{Body: []byte(body)}, nil
	})
}

func TestValidation(t *testing.T) {
	schema := filepath.Join(t.TempDir(), "answer.json")
	if err := os.WriteFile(schema, []byte(`{"type":"object","required":["answer"],"properties":{"answer":{"type":"string"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		schema      string
		requireJSON bool
		bodies      []string // one backend each, tried in order
		wantBackend string   // "" when every answer must be refused
	}{
		{"json ok", "", true, []string{`{"x":1}`}, "b0"},
		{"not json falls over", "", true, []string{`hello`, `[1]`}, "b1"},
		{"all not json", "", true, []string{`hello`, `world`}, ""},
		{"schema ok", schema, false, []string{`{"answer":"42"}`}, "b0"},
		{"schema miss falls over", schema, false, []string{`{"answer":42}`, `{"answer":"42"}`}, "b1"},
		{"schema all miss", schema, false, []string{`{}`, `{"answer":1}`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := resilience.NewValidator(tt.schema, tt.requireJSON)
			if err != nil {
				t.Fatal(err)
			}
			r := &resilience.Route{Validate: v}
			for i, b := range tt.bodies {
				r.Targets = append(r.Targets, resilience.NewTarget("b"+string(rune('0'+i)), answering(b), resilience.PolicyOptions{Timeout: time.Second}))
			}
			ans, err := r.Do(context.Background(), &handlers.Request{})
			if tt.wantBackend != "" {
				if err != nil || ans.Backend != tt.wantBackend {
					t.Fatalf("got %v, %v; want an answer from %s", ans, err, tt.wantBackend)
				}
				return
			}
			if !errors.Is(err, resilience.ErrInvalidResult) {
				t.Fatalf("got %v, want ErrInvalidResult", err)
			}
			if handlers.IsPermanent(err) {
				t.Error("an invalid answer must count as a transient failure of the backend")
			}
		})
	}
	if v, err := resilience.NewValidator("", false); v != nil || err != nil {
		t.Errorf("no validation asked: got %v, %v", v, err)
	}
	if _, err := resilience.NewValidator(filepath.Join(t.TempDir(), "missing.json"), false); err == nil {
		t.Error("missing schema accepted")
	}
}
