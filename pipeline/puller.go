package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// puller fetches tasks only as fast as the worker frees room for them. The
// worker holds at most capacity messages (running, queued for a goroutine
// or settling; held ones in the parking are counted apart): a pull request
// asks for the free room only, so a backlog of any size never piles up in
// the worker, and other workers get the rest.
//
// It speaks the JetStream pull protocol itself (a request to
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> per batch, the tasks and
// the status replies of every request on one inbox subscription) instead
// of jetstream's Fetch, which costs a subscription, a goroutine and a
// channel hop per fetch and a timer per message; on a backlog drain those
// were ~8 % of the worker's CPU. The subscription's handler never blocks
// (the hand-off queue has room for everything the puller asks for), so
// the client's handling of server status messages is never starved as it
// is with a Consume callback that blocks (nats-io/nats.go#1726, #1622).
// Several requests may be open at once: a new one starts as soon as a
// quarter of the capacity is free, so pulls overlap with work instead of
// waiting for the previous batch to drain.
type puller struct {
	capacity  int
	minBatch  int
	expires   time.Duration
	log       *slog.Logger
	nc        *nats.Conn
	apiPrefix string // the JetStream API's subject prefix, "$JS.API." by default
	// deliver takes each fetched message; it must not block.
	deliver func(*nats.Msg)

	held atomic.Int64 // delivered, not yet settled or parked
	// fetching (the sum of reqs' remaining: asked for, not yet arrived)
	// and open (len(reqs)) mirror reqs, changed with it under mu, so that
	// free, on every task's settle, reads them without the lock.
	fetching atomic.Int64
	open     atomic.Int64
	room     chan struct{}
	ended    chan error // a request ended with this error (non-blocking sends)

	mu   sync.Mutex
	next uint64
	// reqs are the open requests, oldest first. A task does not say which
	// request brought it (it arrives on its own subject), so it is counted
	// against the oldest; a request's end (the server's status reply,
	// which does name it, with the count it did not deliver) corrects the
	// rest. fetching is exact either way; open may lag by a request.
	reqs []pullReq
}

// pullReq is one open pull request.
type pullReq struct {
	token     uint64
	remaining int
	deadline  time.Time // ended by the client if the server has not ended it by then
}

func newPuller(capacity int, expires time.Duration, log *slog.Logger, nc *nats.Conn, apiPrefix string, deliver func(*nats.Msg)) *puller {
	return &puller{
		capacity: capacity, minBatch: max(1, capacity/4), expires: expires, log: log,
		nc: nc, apiPrefix: apiPrefix, deliver: deliver,
		room: make(chan struct{}, 1), ended: make(chan error, 16),
	}
}

// apiPrefixOf is the API subject prefix js sends its requests with.
func apiPrefixOf(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

// take counts a message as held; free gives its room back.
func (p *puller) take() { p.held.Add(1) }

// free gives the room of one held message back, and wakes the puller
// when that lets it fetch: a batch's worth of room, or any room with no
// request open (a request's end wakes it too). Waking it for every
// message would cost a goroutine switch per task for nothing.
func (p *puller) free() {
	room := p.capacity - int(p.held.Add(-1)) - int(p.fetching.Load())
	if room < p.minBatch && p.open.Load() > 0 {
		return
	}
	p.wake()
}

func (p *puller) wake() {
	select {
	case p.room <- struct{}{}:
	default:
	}
}

// errConsumerGone says the consumer (or its stream) no longer exists.
var errConsumerGone = errors.New("consumer gone")

// run fetches from c until ctx ends, then waits for its open requests to
// end (at most the request expiry, and a second) so that every message
// fetched has been handed to deliver. It returns errConsumerGone
// (wrapped) when the consumer was deleted, else nil.
func (p *puller) run(ctx context.Context, c jetstream.Consumer) error {
	info := c.CachedInfo()
	subject := p.apiPrefix + "CONSUMER.MSG.NEXT." + info.Stream + "." + info.Name
	inbox := p.nc.NewInbox() + "."
	sub, err := p.nc.Subscribe(inbox+"*", func(m *nats.Msg) { p.receive(inbox, m) })
	if err != nil {
		return fmt.Errorf("pull subscription: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Never a slow consumer: what arrives is bounded by what was asked.
	_ = sub.SetPendingLimits(-1, -1)
	tick := time.NewTicker(p.expires / 4)
	defer tick.Stop()
	// closeAll waits for the open requests: their messages are delivered
	// (and, when draining, handed back) before run returns.
	closeAll := func(err error) error {
		for p.open.Load() > 0 {
			select {
			case <-p.ended:
			case <-p.room:
			case now := <-tick.C:
				p.expire(now)
			}
		}
		return err
	}
	var body []byte
	var retryAt time.Time // after a failed request, no new one before then
	for {
		for retryAt.IsZero() || time.Now().After(retryAt) {
			retryAt = time.Time{} // passed: no clock read until the next failure
			free := p.capacity - int(p.held.Load()) - int(p.fetching.Load())
			if free < p.minBatch && (free <= 0 || p.open.Load() > 0) {
				break
			}
			p.mu.Lock()
			p.next++
			token := p.next
			p.reqs = append(p.reqs, pullReq{token: token, remaining: free, deadline: time.Now().Add(p.expires + time.Second)})
			p.fetching.Add(int64(free))
			p.open.Add(1)
			p.mu.Unlock()
			body = fmt.Appendf(body[:0], `{"batch":%d,"expires":%d}`, free, p.expires.Nanoseconds())
			if err := p.nc.PublishRequest(subject, inbox+strconv.FormatUint(token, 36), body); err != nil {
				p.end(token, -1, nil)
				p.log.Warn("fetch tasks", "err", err)
				retryAt = time.Now().Add(fetchRetry)
				break
			}
		}
		var retry <-chan time.Time
		if !retryAt.IsZero() {
			retry = time.After(max(time.Until(retryAt), 0))
		}
		select {
		case <-ctx.Done():
			return closeAll(nil)
		case err := <-p.ended:
			if gone(err) {
				return closeAll(fmt.Errorf("%w: %w", errConsumerGone, err))
			}
			p.log.Warn("fetch tasks", "err", err)
			retryAt = time.Now().Add(fetchRetry)
		case now := <-tick.C:
			p.expire(now)
		case <-p.room:
		case <-retry:
		}
	}
}

// receive handles what arrives for the pull requests: tasks, and status
// messages that end a request. It runs on the subscription's goroutine
// and never blocks.
func (p *puller) receive(inbox string, m *nats.Msg) {
	if len(m.Data) == 0 && len(m.Header) > 0 {
		if status := m.Header.Get("Status"); status != "" {
			token, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, inbox), 36, 64)
			if err == nil {
				p.status(token, status, m.Header)
			}
			return
		}
	}
	p.mu.Lock()
	ended := false
	if len(p.reqs) > 0 {
		p.fetching.Add(-1)
		if p.reqs[0].remaining--; p.reqs[0].remaining <= 0 {
			p.reqs = p.reqs[1:]
			p.open.Add(-1)
			ended = true
		}
	}
	p.mu.Unlock()
	p.deliver(m) // a late task of a request ended by the client is taken all the same
	if ended {
		p.wake()
	}
}

// status handles a status message for request token (as jetstream's
// Fetch reads them).
func (p *puller) status(token uint64, status string, h nats.Header) {
	var err error
	switch status {
	case "100": // an idle heartbeat: nothing ends
		return
	case "404", "408": // no messages, or the request expired
	case "409":
		descr := h.Get("Description")
		switch d := strings.ToLower(descr); {
		case strings.Contains(d, "consumer deleted"):
			err = jetstream.ErrConsumerDeleted
		case strings.Contains(d, "leadership change"), strings.Contains(d, "server shutdown"),
			strings.Contains(d, "batch completed"), strings.Contains(d, "exceeds maxbytes"):
			// The request ends; the next one finds the new leader.
		default:
			err = fmt.Errorf("nats: %s", descr)
		}
	case "503":
		err = nats.ErrNoResponders
	default:
		err = fmt.Errorf("nats: status %s: %s", status, h.Get("Description"))
	}
	undelivered := -1 // unknown: what is counted as its remaining
	if n, perr := strconv.Atoi(h.Get("Nats-Pending-Messages")); perr == nil && n >= 0 {
		undelivered = n
	}
	p.end(token, undelivered, err)
}

// end ends request token, of which undelivered tasks will not come (-1:
// unknown, take its remaining count), and tells the puller.
func (p *puller) end(token uint64, undelivered int, err error) {
	p.mu.Lock()
	i := 0
	for i < len(p.reqs) && p.reqs[i].token != token {
		i++
	}
	if i == len(p.reqs) {
		// Counted as complete already: the tasks counted against it were
		// others', which are owed them back.
		if undelivered > 0 {
			p.uncount(undelivered)
		}
		p.mu.Unlock()
		return
	}
	r := p.reqs[i]
	p.reqs = append(p.reqs[:i], p.reqs[i+1:]...)
	p.open.Add(-1)
	p.fetching.Add(-int64(r.remaining))
	switch {
	case undelivered < 0 || undelivered == r.remaining:
	case undelivered < r.remaining:
		// It brought more than was counted against it: the others
		// brought fewer, so they have that much more to come.
		if len(p.reqs) > 0 {
			p.reqs[0].remaining += r.remaining - undelivered
			p.fetching.Add(int64(r.remaining - undelivered))
		}
	default:
		// It brought fewer: the rest counted against the others.
		p.uncount(undelivered - r.remaining)
	}
	p.mu.Unlock()
	if err != nil {
		select {
		case p.ended <- err:
		default: // errors enough are waiting to be seen
		}
	}
	p.wake()
}

// uncount takes n tasks off the oldest open requests' remaining counts:
// they arrived and were counted against a request that was not theirs.
// p.mu is held.
func (p *puller) uncount(n int) {
	for n > 0 && len(p.reqs) > 0 {
		k := min(n, p.reqs[0].remaining)
		p.reqs[0].remaining -= k
		p.fetching.Add(-int64(k))
		n -= k
		if p.reqs[0].remaining == 0 {
			p.reqs = p.reqs[1:]
			p.open.Add(-1)
		}
	}
}

// expire ends the requests the server has not ended past their deadline
// (a request lost in a reconnect or a leader change).
func (p *puller) expire(now time.Time) {
	var late []uint64
	p.mu.Lock()
	for _, r := range p.reqs {
		if now.After(r.deadline) {
			late = append(late, r.token)
		}
	}
	p.mu.Unlock()
	for _, t := range late {
		p.end(t, -1, nil)
	}
}

// fetchRetry is the pause after a failed request (a server restarting, a
// leader election), so a failing server is not asked in a tight loop.
const fetchRetry = 250 * time.Millisecond

// gone reports whether err means the consumer or its stream is no more.
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrNoResponders)
}
