package client_test

import (
	"testing"
	"time"

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/health"
)

func TestWorkerLiveness(t *testing.T) {
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	running := func(at time.Time, uptime float64, done uint64) client.Worker {
		return client.Worker{WorkerEvent: health.WorkerEvent{Status: health.WorkerRunning, Interval: 10, UptimeSeconds: uptime,
			Tasks: health.Tasks{Done: done}, At: at}}
	}
	tests := []struct {
		name string
		give client.Worker
		want health.WorkerStatus
	}{
		{"counting", running(now.Add(-5*time.Second), 120, 3), health.WorkerRunning},
		{"idle but past its first heartbeat", running(now.Add(-5*time.Second), 120, 0), health.WorkerRunning},
		{"first heartbeat", running(now.Add(-time.Second), 0.2, 0), client.WorkerStarting},
		{"heartbeats stopped", running(now.Add(-31*time.Second), 120, 3), client.WorkerSilent},
		{"stopped first heartbeat", running(now.Add(-time.Minute), 0.2, 0), client.WorkerSilent},
		{"stopped on purpose", client.Worker{WorkerEvent: health.WorkerEvent{Status: health.WorkerStopped, Interval: 10, At: now.Add(-time.Hour)}}, health.WorkerStopped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.give.Liveness(now); got != tt.want {
				t.Errorf("Liveness = %q, want %q", got, tt.want)
			}
		})
	}
}
