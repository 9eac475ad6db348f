package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// progress keeps long tasks from being redelivered: it tracks every task
// in flight and, from one goroutine, sends InProgress for each that has
// run for half the ack wait since it was delivered or last touched. One
// ticker for all tasks costs less per task than a timer each.
//
// A task calling its route for longer than the route's budget (every
// attempt's timeout, wait and backoff) is stuck in a backend that ignores
// cancellation: it is no longer kept alive, so the server redelivers it
// and, after max_deliver, reports it for the DLQ (max_deliveries).
type progress struct {
	ackWait time.Duration
	stuck   func(jetstream.Msg) // told once per stuck task

	mu      sync.Mutex
	nextID  uint64
	running map[uint64]tracked
}

type tracked struct {
	msg     jetstream.Msg
	touched time.Time
	giveUp  time.Time // zero while not calling a route (waiting, held)
}

func newProgress(ackWait time.Duration, stuck func(jetstream.Msg)) *progress {
	return &progress{ackWait: ackWait, stuck: stuck, running: make(map[uint64]tracked)}
}

// calling marks the task as calling its route, which can take budget at
// most (0: unbounded).
func (p *progress) calling(id uint64, budget time.Duration) {
	if budget <= 0 {
		return
	}
	p.mu.Lock()
	if tr, ok := p.running[id]; ok {
		// A margin of one ack wait for the result's store and settling.
		tr.giveUp = time.Now().Add(budget + p.ackWait)
		p.running[id] = tr
	}
	p.mu.Unlock()
}

// waiting marks the task as no longer calling (held after a refusal).
func (p *progress) waiting(id uint64) {
	p.mu.Lock()
	if tr, ok := p.running[id]; ok {
		tr.giveUp = time.Time{}
		p.running[id] = tr
	}
	p.mu.Unlock()
}

// add starts tracking msg and returns its id for done.
func (p *progress) add(msg jetstream.Msg) uint64 {
	now := time.Now()
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	p.running[id] = tracked{msg: msg, touched: now}
	p.mu.Unlock()
	return id
}

// done stops tracking a task. It is safe to call more than once.
func (p *progress) done(id uint64) {
	p.mu.Lock()
	delete(p.running, id)
	p.mu.Unlock()
}

// run touches due tasks every quarter ack wait until ctx ends.
func (p *progress) run(ctx context.Context) {
	t := time.NewTicker(max(p.ackWait/4, 50*time.Millisecond))
	defer t.Stop()
	var due, stuck []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due, stuck = due[:0], stuck[:0]
			p.mu.Lock()
			for id, tr := range p.running {
				if !tr.giveUp.IsZero() && now.After(tr.giveUp) {
					delete(p.running, id)
					stuck = append(stuck, tr.msg)
					continue
				}
				if now.Sub(tr.touched) >= p.ackWait/2 {
					tr.touched = now
					p.running[id] = tr
					due = append(due, tr.msg)
				}
			}
			p.mu.Unlock()
			for _, m := range due {
				_ = m.InProgress()
			}
			for _, m := range stuck {
				if p.stuck != nil {
					p.stuck(m)
				}
			}
		}
	}
}
