package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// resultPublisher stores results in RESULTS asynchronously and tells the
// settler of each server answer: stored(d) once the result is in the
// stream, failed(d, err) once it cannot be (refused, or unanswered past
// the ack timeout).
//
// It is what jetstream's PublishMsgAsync with ack callbacks does, cut to
// the worker's needs, because on a backlog drain that machinery was the
// largest cost outside the worker's own code (~12 % of its CPU): a future,
// a timer and a JSON decode per result, a map keyed by a random string.
// Here a result costs a map entry keyed by a counter, and a success
// acknowledgement is recognised without decoding it; only errors are
// decoded. Unlike the library it does not fail the results awaiting their
// acknowledgement when the connection comes back: it publishes them again
// (RESULTS keeps one message per subject, so a second store replaces the
// first), so a reconnect costs no backend call.
type resultPublisher struct {
	nc      *nats.Conn
	timeout time.Duration
	stored  func(*delivery)
	failed  func(*delivery, error)

	prefix string // reply subjects: prefix + token in base 36
	window chan struct{}
	sub    *nats.Subscription
	status chan nats.Status

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*pendingStore
	epoch   uint64 // ticks of the timeout sweep
}

// pendingStore is a result awaiting the server's answer.
type pendingStore struct {
	d       *delivery
	msg     *nats.Msg
	epoch   uint64 // the sweep's tick when it was (last) published
	retries int    // after "no responders"
	retry   bool   // "no responders": the next sweep publishes it again
}

// noResponderRetries is how often a publish that found no stream
// responding (a leader election in a cluster) is made again, at the next
// sweep, before its store counts as failed (the library's default count).
const noResponderRetries = 2

// sweepEvery is the timeout sweep's tick: a result times out between
// timeout and timeout+sweepEvery after its publish.
const sweepEvery = time.Second

// errResultAckTimeout: the server did not answer a result's publish in
// time; the store counts as failed (transient: the task is redelivered).
var errResultAckTimeout = errors.New("no acknowledgement of the result from the server")

func newResultPublisher(nc *nats.Conn, window int, timeout time.Duration, stored func(*delivery), failed func(*delivery, error)) *resultPublisher {
	return &resultPublisher{
		nc: nc, timeout: timeout, stored: stored, failed: failed,
		prefix: nc.NewInbox() + ".", window: make(chan struct{}, window),
		pending: map[uint64]*pendingStore{},
	}
}

// start subscribes to the server's answers; results may be published
// from then on, and run must follow.
func (p *resultPublisher) start() error {
	sub, err := p.nc.Subscribe(p.prefix+"*", p.answer)
	if err != nil {
		return fmt.Errorf("pipeline: result acknowledgements: %w", err)
	}
	// The acknowledgements of a burst of results must not be dropped as
	// a slow consumer's.
	_ = sub.SetPendingLimits(-1, -1)
	p.sub = sub
	p.status = p.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	return nil
}

// run times out unanswered results and publishes the pending ones again
// after a reconnect, until ctx ends; then it stops receiving answers. The
// worker ends it once every result is settled (or its drain gave up).
func (p *resultPublisher) run(ctx context.Context) {
	status := p.status
	defer func() {
		p.nc.RemoveStatusListener(status)
		_ = p.sub.Unsubscribe()
	}()
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-status:
			if s == nats.CLOSED {
				p.fail(p.tokens(nil), nats.ErrConnectionClosed)
			} else {
				p.republishAll()
			}
		case <-tick.C:
			p.sweep()
		}
	}
}

// publish stores msg as d's result, waiting while the window is full (the
// backend call has succeeded and must not be made again). On a nil error
// exactly one of stored and failed is called for d later, possibly before
// publish returns; on an error neither is.
func (p *resultPublisher) publish(ctx context.Context, d *delivery, msg *nats.Msg) error {
	// Room first: with both room and a done ctx, a lone select could pick
	// the error for a result that would have been stored.
	select {
	case p.window <- struct{}{}:
	default:
		select {
		case p.window <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("result publish window full: %w", ctx.Err())
		}
	}
	// Registered and sent under the lock: a republish (after a
	// reconnect) cannot send msg at the same time, so once the answer has
	// come nobody reads msg any more and the settler may reuse it.
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	token := p.next
	msg.Reply = p.prefix + strconv.FormatUint(token, 36)
	p.pending[token] = &pendingStore{d: d, msg: msg, epoch: p.epoch}
	if err := p.nc.PublishMsg(msg); err != nil {
		delete(p.pending, token)
		<-p.window
		return err
	}
	return nil
}

// take removes the pending store of token and frees its window slot; nil
// if it was answered already.
func (p *resultPublisher) take(token uint64) *pendingStore {
	p.mu.Lock()
	ps := p.pending[token]
	delete(p.pending, token)
	p.mu.Unlock()
	if ps != nil {
		<-p.window
	}
	return ps
}

// answer handles the server's reply to a result's publish.
func (p *resultPublisher) answer(m *nats.Msg) {
	token, err := strconv.ParseUint(m.Subject[min(len(p.prefix), len(m.Subject)):], 36, 64)
	if err != nil {
		return
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		// No stream answered: tried again at the next sweep (its owner is
		// run, not a timer of its own), a few times.
		p.mu.Lock()
		ps := p.pending[token]
		retry := ps != nil && ps.retries < noResponderRetries
		if retry {
			ps.retries++
			ps.retry = true
		}
		p.mu.Unlock()
		if !retry {
			p.fail([]uint64{token}, jetstream.ErrNoStreamResponse)
		}
		return
	}
	ps := p.take(token)
	if ps == nil {
		return // timed out, or answered twice after a republish
	}
	if err := ackError(m.Data); err != nil {
		p.failed(ps.d, err)
		return
	}
	p.stored(ps.d)
}

// ackError is nil for a PubAck, else what the server said. A success
// acknowledgement, {"stream":"RESULTS","seq":N[,...]}, has no "error"
// key; anything else is decoded.
func ackError(data []byte) error {
	if bytes.HasPrefix(data, []byte(`{"stream":"`)) && !bytes.Contains(data, []byte(`"error"`)) {
		return nil
	}
	var resp struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return fmt.Errorf("%w: %w", jetstream.ErrInvalidJSAck, err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if resp.Stream == "" {
		return jetstream.ErrInvalidJSAck
	}
	return nil
}

// republish sends a pending result again under its token.
func (p *resultPublisher) republish(token uint64) {
	p.mu.Lock()
	ps := p.pending[token]
	if ps == nil {
		p.mu.Unlock()
		return
	}
	ps.epoch, ps.retry = p.epoch, false
	err := p.nc.PublishMsg(ps.msg) // under the lock: see publish
	p.mu.Unlock()
	if err != nil {
		p.fail([]uint64{token}, err)
	}
}

// republishAll sends every pending result again (after a reconnect, their
// acknowledgements may be lost).
func (p *resultPublisher) republishAll() {
	for _, t := range p.tokens(nil) {
		p.republish(t)
	}
}

// sweep fails the results unanswered for longer than the timeout, and
// publishes again those that found no stream responding.
func (p *resultPublisher) sweep() {
	ticks := uint64(p.timeout / sweepEvery)
	p.mu.Lock()
	p.epoch++
	p.mu.Unlock()
	p.fail(p.tokens(func(ps *pendingStore) bool { return p.epoch-ps.epoch > ticks }), errResultAckTimeout)
	for _, t := range p.tokens(func(ps *pendingStore) bool { return ps.retry }) {
		p.republish(t)
	}
}

// tokens lists the pending results that keep (nil: all) holds for; keep
// runs under p.mu.
func (p *resultPublisher) tokens(keep func(*pendingStore) bool) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint64
	for t, ps := range p.pending {
		if keep == nil || keep(ps) {
			out = append(out, t)
		}
	}
	return out
}

// fail fails the pending results of tokens with err (those answered
// meanwhile are left alone).
func (p *resultPublisher) fail(tokens []uint64, err error) {
	for _, t := range tokens {
		if ps := p.take(t); ps != nil {
			p.failed(ps.d, err)
		}
	}
}
