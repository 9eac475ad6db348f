package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// puller fetches tasks only as fast as the worker frees room for them. The
// worker holds at most capacity messages (running, queued for a goroutine
// or settling; held ones in the parking are counted apart): a fetch asks
// for the free room only, so a backlog of any size never piles up in the
// worker, and other workers get the rest.
//
// Each fetch is a pull request of its own, read by its own goroutine that
// never blocks (the hand-off queue has room for everything the puller may
// have asked for), so the client's handling of server status messages is
// never starved as it is with a Consume callback that blocks
// (nats-io/nats.go#1726, #1622). Several fetches may be open at once: a new
// one starts as soon as a quarter of the capacity is free, so pulls overlap
// with work instead of waiting for the previous batch to drain.
type puller struct {
	capacity int
	minBatch int
	expires  time.Duration
	log      *slog.Logger
	// deliver takes each fetched message; it must not block.
	deliver func(jetstream.Msg)

	held     atomic.Int64 // delivered, not yet settled or parked
	fetching atomic.Int64 // asked for, not yet arrived
	open     atomic.Int64 // fetches not yet ended
	room     chan struct{}
}

func newPuller(capacity int, expires time.Duration, log *slog.Logger, deliver func(jetstream.Msg)) *puller {
	return &puller{
		capacity: capacity, minBatch: max(1, capacity/4), expires: expires, log: log,
		deliver: deliver, room: make(chan struct{}, 1),
	}
}

// take counts a message as held; free gives its room back.
func (p *puller) take() { p.held.Add(1) }

// free gives the room of one held message back, and wakes the puller
// when that lets it fetch: a batch's worth of room, or any room with no
// fetch open (a fetch's end wakes it too). Waking it for every message
// would cost a goroutine switch per task for nothing.
func (p *puller) free() {
	room := p.capacity - int(p.held.Add(-1)) - int(p.fetching.Load())
	if room < p.minBatch && p.open.Load() > 0 {
		return
	}
	select {
	case p.room <- struct{}{}:
	default:
	}
}

// errConsumerGone says the consumer (or its stream) no longer exists.
var errConsumerGone = errors.New("consumer gone")

// run fetches from c until ctx ends, then waits for its open fetches to
// finish (at most the fetch expiry) so that every message fetched has been
// handed to deliver. It returns errConsumerGone (wrapped) when the consumer
// was deleted, else nil.
func (p *puller) run(ctx context.Context, c jetstream.Consumer) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan error) // a fetch ended with this error (nil: fine)
	// closeAll waits for the open fetches: their messages are delivered
	// (and, when draining, handed back) before run returns.
	closeAll := func(err error) error {
		for ; p.open.Load() > 0; p.open.Add(-1) {
			<-done
		}
		return err
	}
	var retryAt time.Time // after a failed fetch, no new one before then
	for {
		for retryAt.IsZero() || time.Now().After(retryAt) {
			retryAt = time.Time{} // passed: no clock read until the next failure
			free := p.capacity - int(p.held.Load()) - int(p.fetching.Load())
			if free < p.minBatch && (free <= 0 || p.open.Load() > 0) {
				break
			}
			batch, err := c.Fetch(free, jetstream.FetchMaxWait(p.expires))
			if err != nil {
				if gone(err) {
					return closeAll(fmt.Errorf("%w: %w", errConsumerGone, err))
				}
				p.log.Warn("fetch tasks", "err", err)
				retryAt = time.Now().Add(fetchRetry)
				break
			}
			p.fetching.Add(int64(free))
			p.open.Add(1)
			wg.Go(func() {
				n := 0
				for m := range batch.Messages() {
					n++
					p.fetching.Add(-1)
					p.deliver(m)
				}
				p.fetching.Add(-int64(free - n))
				done <- batch.Error()
			})
		}
		var retry <-chan time.Time
		if !retryAt.IsZero() {
			retry = time.After(max(time.Until(retryAt), 0))
		}
		select {
		case <-ctx.Done():
			return closeAll(nil)
		case err := <-done:
			p.open.Add(-1)
			switch {
			case err == nil:
			case gone(err):
				return closeAll(fmt.Errorf("%w: %w", errConsumerGone, err))
			default:
				p.log.Warn("fetch tasks", "err", err)
				retryAt = time.Now().Add(fetchRetry)
			}
		case <-p.room:
		case <-retry:
		}
	}
}

// fetchRetry is the pause after a failed fetch (a server restarting, a
// leader election), so a failing server is not asked in a tight loop.
const fetchRetry = 250 * time.Millisecond

// gone reports whether err means the consumer or its stream is no more.
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrNoResponders)
}
