package pipeline_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
)

func TestDecide(t *testing.T) {
	transient := handlers.Transient(errors.New("503"))
	slow := &handlers.Error{Class: handlers.ErrTransient, Status: 429, RetryAfter: 45 * time.Second}
	tests := []struct {
		name      string
		give      error
		delivered int
		max       int
		want      pipeline.Fate
	}{
		{"success", nil, 1, 5, pipeline.Fate{Action: pipeline.Ack}},
		{"shutdown hands back now", fmt.Errorf("x: %w", pipeline.ErrShutdown), 5, 5, pipeline.Fate{Action: pipeline.Redeliver}},
		{"cancelled is dead-lettered", fmt.Errorf("x: %w", pipeline.ErrCancelled), 1, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.Cancelled}},
		{"beyond max_deliver", fmt.Errorf("x: %w", pipeline.ErrMaxDeliveries), 7, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.MaxDeliveries}},
		{"poison", fmt.Errorf("%w: bad id", task.ErrPoison), 1, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.Poison}},
		{"expired", pipeline.ErrExpired, 1, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.Expired}},
		{"no route", fmt.Errorf("%w x", resilience.ErrNoRoute), 1, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.NoRoute}},
		{"invalid result", pipeline.ErrInvalidResult, 1, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.InvalidResult}},
		{"permanent", &resilience.Failure{Err: handlers.Permanent(errors.New("400"))}, 1, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.Rejected}},
		{"transient first", transient, 1, 5, pipeline.Fate{Action: pipeline.Redeliver, Delay: time.Second}},
		{"transient third", transient, 3, 5, pipeline.Fate{Action: pipeline.Redeliver, Delay: 4 * time.Second}},
		{"transient backoff capped", transient, 20, 0, pipeline.Fate{Action: pipeline.Redeliver, Delay: 30 * time.Second}},
		{"retry-after honoured", slow, 1, 5, pipeline.Fate{Action: pipeline.Redeliver, Delay: 45 * time.Second}},
		{"transient last delivery", transient, 5, 5, pipeline.Fate{Action: pipeline.DeadLetter, Reason: dlq.Exhausted}},
		{"unclassified is transient", errors.New("boom"), 2, 5, pipeline.Fate{Action: pipeline.Redeliver, Delay: 2 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pipeline.Decide(tt.give, tt.delivered, tt.max); got != tt.want {
				t.Errorf("Decide(%v, %d, %d) = %+v, want %+v", tt.give, tt.delivered, tt.max, got, tt.want)
			}
		})
	}
}
