package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/breakwater/breakwater/tracing"
)

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	tr, _ := recorder(t)
	ctx, span := tr.Tracer().Start(context.Background(), "work")
	defer span.End()
	sc := span.SpanContext()

	tests := []struct {
		name      string
		log       func(*slog.Logger)
		wantTrace string
		wantSpan  string
		wantAttr  string // an attribute that must survive
	}{
		{"with span", func(l *slog.Logger) { l.InfoContext(ctx, "done", "task_id", "t1") }, sc.TraceID().String(), sc.SpanID().String(), "task_id"},
		{"through With", func(l *slog.Logger) { l.With("type", "echo").InfoContext(ctx, "done") }, sc.TraceID().String(), sc.SpanID().String(), "type"},
		{"without span", func(l *slog.Logger) { l.InfoContext(context.Background(), "idle", "n", 1) }, "", "", "n"},
		{"without context", func(l *slog.Logger) { l.Info("idle", "n", 1) }, "", "", "n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(tracing.NewLogHandler(slog.NewJSONHandler(&buf, nil))))
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			for k, want := range map[string]string{"trace_id": tt.wantTrace, "span_id": tt.wantSpan} {
				got, ok := line[k]
				if want == "" && ok {
					t.Errorf("%s = %v, want none", k, got)
				}
				if want != "" && got != want {
					t.Errorf("%s = %v, want %s", k, got, want)
				}
			}
			if _, ok := line[tt.wantAttr]; !ok {
				t.Errorf("line %s lost attribute %s", buf.String(), tt.wantAttr)
			}
		})
	}
}

func TestLogHandlerKeepsLevel(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(tracing.NewLogHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l.Info("dropped")
	if buf.Len() != 0 {
		t.Errorf("info logged at warn level: %q", buf.String())
	}
	if !l.Enabled(context.Background(), slog.LevelError) {
		t.Error("error not enabled at warn level")
	}
}
