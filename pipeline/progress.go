package pipeline

import (
	"context"
	"github.com/nats-io/nats.go"
	"sync"
	"time"
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
	nc      *nats.Conn // sends the InProgress acknowledgements
	ackWait time.Duration
	stuck   func(*delivery) // told once per stuck task
	// failed is told of an InProgress that could not be sent.
	failed func(d *delivery, op string, err error)

	mu      sync.Mutex
	nextID  uint64
	running map[uint64]tracked
	// lastTick is when the ticker last ran (or started): a task that
	// arrives is counted as touched then, not read from the clock per
	// task. It can only make an InProgress come a tick early, never late.
	lastTick time.Time
}

type tracked struct {
	d       *delivery
	touched time.Time
	giveUp  time.Time // zero while not calling a route (waiting, held)
}

func newProgress(nc *nats.Conn, ackWait time.Duration, stuck func(*delivery), failed func(*delivery, string, error)) *progress {
	return &progress{nc: nc, ackWait: ackWait, stuck: stuck, failed: failed, running: make(map[uint64]tracked), lastTick: time.Now()}
}

// calling marks the task as calling its route from about since (its
// processing's start), which can take budget at most (0: unbounded).
func (p *progress) calling(id uint64, since time.Time, budget time.Duration) {
	if budget <= 0 {
		return
	}
	p.mu.Lock()
	if tr, ok := p.running[id]; ok {
		// A margin of one ack wait for the result's store and settling.
		tr.giveUp = since.Add(budget + p.ackWait)
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

// add starts tracking d from the moment it arrived and sets its id.
func (p *progress) add(d *delivery) {
	p.mu.Lock()
	p.nextID++
	d.pid = p.nextID
	p.running[d.pid] = tracked{d: d, touched: p.lastTick}
	p.mu.Unlock()
}

// takeAll stops tracking every task and returns them (drain timeout).
func (p *progress) takeAll() []*delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*delivery, 0, len(p.running))
	for id, tr := range p.running {
		out = append(out, tr.d)
		delete(p.running, id)
	}
	return out
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
	p.mu.Lock()
	p.lastTick = time.Now()
	p.mu.Unlock()
	var due, stuck []*delivery
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due, stuck = due[:0], stuck[:0]
			p.mu.Lock()
			p.lastTick = now
			for id, tr := range p.running {
				if !tr.giveUp.IsZero() && now.After(tr.giveUp) {
					delete(p.running, id)
					stuck = append(stuck, tr.d)
					continue
				}
				if now.Sub(tr.touched) >= p.ackWait/2 {
					tr.touched = now
					p.running[id] = tr
					due = append(due, tr.d)
				}
			}
			p.mu.Unlock()
			for _, d := range due {
				if err := respond(p.nc, d, ackInProgress); err != nil {
					p.failed(d, "in progress", err)
				}
			}
			for _, m := range stuck {
				if p.stuck != nil {
					p.stuck(m)
				}
			}
		}
	}
}
