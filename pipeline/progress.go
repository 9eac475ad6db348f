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
type progress struct {
	ackWait time.Duration

	mu      sync.Mutex
	nextID  uint64
	running map[uint64]tracked
}

type tracked struct {
	msg     jetstream.Msg
	touched time.Time
}

func newProgress(ackWait time.Duration) *progress {
	return &progress{ackWait: ackWait, running: make(map[uint64]tracked)}
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
	var due []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			p.mu.Lock()
			for id, tr := range p.running {
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
		}
	}
}
