package service_test

import (
	"log/slog"
	"runtime/debug"
	"testing"

	"github.com/breakwater/breakwater/service"
)

func TestTuneRuntime(t *testing.T) {
	was := debug.SetGCPercent(123)
	t.Cleanup(func() { debug.SetGCPercent(was) })
	t.Setenv("GOMEMLIMIT", "1GiB") // kept: the test process's limit is not touched
	log := slog.New(slog.DiscardHandler)
	cases := []struct {
		gogc string
		want int
	}{
		{"", service.GCPercent}, // no GOGC: the worker's target
		{"123", 123},            // GOGC set: what the runtime took from it is kept
	}
	for _, c := range cases {
		debug.SetGCPercent(123)
		rt := service.TuneRuntime(func(k string) string {
			if k == "GOGC" {
				return c.gogc
			}
			return ""
		}, log)
		if got := debug.SetGCPercent(123); got != c.want || rt.GCPercent != c.want {
			t.Errorf("GOGC=%q: runtime at %d, reported %d; want %d", c.gogc, got, rt.GCPercent, c.want)
		}
		if rt.MemLimit != debug.SetMemoryLimit(-1) {
			t.Errorf("reported memory limit %d, runtime's %d", rt.MemLimit, debug.SetMemoryLimit(-1))
		}
	}
}
