package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/task"
)

// Result is a task's result: the backend's response body and the headers
// the worker set (Task-Backend, Task-Attempts, Task-Cache, Task-Duration).
type Result struct {
	// Subject is results.<type>.<id> for a stored result, the reply
	// subject for one PublishAndWait received directly.
	Subject string
	Type    string
	ID      string
	// Status is Task-Status: "ok" for every Result.
	Status string
	// Header holds the result's headers as stored (without the ones a
	// direct get adds about where it was stored).
	Header nats.Header
	Body   []byte
	// Seq and Stored are the result's in RESULTS; zero for a reply.
	Seq    uint64
	Stored time.Time
}

// Backend is the backend that answered (Task-Backend), or "cache".
func (r *Result) Backend() string { return r.Header.Get(task.HeaderBackend) }

// Result returns the stored result of task typ/id, or an error wrapping
// ErrNoResult when there is none (not done yet, failed, or expired).
// Without a deadline in ctx it is bounded by the request timeout.
func (c *Client) Result(ctx context.Context, typ, id string) (*Result, error) {
	if err := ValidType(typ); err != nil {
		return nil, err
	}
	if err := ValidID(id); err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	var s jetstream.Stream
	return c.lastResult(ctx, &s, typ, id)
}

// lastResult fetches the stored result of task id, looking the RESULTS
// stream up once (*s caches it between polls).
func (c *Client) lastResult(ctx context.Context, s *jetstream.Stream, typ, id string) (*Result, error) {
	topo := c.o.topo
	if *s == nil {
		st, err := c.js.Stream(ctx, topo.ResultsStream())
		if err != nil {
			return nil, fmt.Errorf("look up results: %w", StreamHint(err, topo.ResultsStream()))
		}
		*s = st
	}
	// Direct get when the stream allows it (the contract's RESULTS does):
	// any replica answers, and it does not go through the stream leader.
	m, err := (*s).GetLastMsgForSubject(ctx, topo.ResultSubject(typ, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w for %s %s", ErrNoResult, typ, id)
	}
	if err != nil {
		return nil, fmt.Errorf("get result %s %s: %w", typ, id, err)
	}
	return &Result{
		Subject: m.Subject, Type: typ, ID: id, Status: m.Header.Get(task.HeaderStatus),
		Header: StoredHeaders(m.Header), Body: m.Data, Seq: m.Sequence, Stored: m.Time,
	}, nil
}

// directGetHeaders are added by a direct get to describe where the message
// was stored; they are not part of what was stored.
var directGetHeaders = []string{
	jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.TimeStampHeaer,
	jetstream.SubjectHeader, "Nats-Last-Sequence", "Nats-Num-Pending",
}

// StoredHeaders is h without the headers a direct get adds, so that a
// message reads the same whether or not its stream allows direct gets.
func StoredHeaders(h nats.Header) nats.Header {
	out := make(nats.Header, len(h))
	for k, v := range h {
		if !slices.Contains(directGetHeaders, k) {
			out[k] = v
		}
	}
	return out
}

// ResultsFilter selects the results Results streams.
type ResultsFilter struct {
	// Type selects one task type; empty: every type.
	Type string
	// All starts with the results already stored; false: only new ones.
	All bool
}

// Results streams results as they are stored, in stream order, until ctx
// ends or the caller stops iterating. An error ends nothing by itself:
// the caller may go on (the stream is followed again) or stop. When ctx
// ends the last pair carries its error. It follows with an ordered
// consumer: no state on the server beyond the iteration, and gaps and
// reconnects are recovered from by itself.
func (c *Client) Results(ctx context.Context, f ResultsFilter) iter.Seq2[*Result, error] {
	return func(yield func(*Result, error) bool) {
		if f.Type != "" {
			if err := ValidType(f.Type); err != nil {
				yield(nil, err)
				return
			}
		}
		policy := jetstream.DeliverNewPolicy
		if f.All {
			policy = jetstream.DeliverAllPolicy
		}
		for m, err := range c.follow(ctx, "follow results", c.o.topo.ResultsStream(), c.o.topo.ResultsFilter(f.Type), policy) {
			var r *Result
			if err == nil {
				r = c.streamedResult(m)
			}
			if !yield(r, err) {
				return
			}
		}
	}
}

// follow yields the messages of stream on filter as they are stored, from
// policy on, with an ordered consumer (ephemeral: no state on the server
// beyond the iteration; it recovers by itself from gaps and reconnects).
// what names it in errors. An error it cannot recover from is yielded and
// tried again a second later if the caller goes on; when ctx ends, its
// error is the last.
func (c *Client) follow(ctx context.Context, what, stream, filter string, policy jetstream.DeliverPolicy) iter.Seq2[jetstream.Msg, error] {
	return func(yield func(jetstream.Msg, error) bool) {
		cctx, cancel := withTimeout(ctx, c.o.requestTimeout)
		cons, err := c.js.OrderedConsumer(cctx, stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{filter},
			DeliverPolicy:  policy,
		})
		cancel()
		if err != nil {
			yield(nil, fmt.Errorf("%s: %w", what, StreamHint(err, stream)))
			return
		}
		msgs, err := cons.Messages()
		if err != nil {
			yield(nil, fmt.Errorf("%s: %w", what, err))
			return
		}
		defer msgs.Stop()
		for {
			m, err := msgs.Next(jetstream.NextContext(ctx))
			if ctx.Err() != nil {
				yield(nil, ctx.Err())
				return
			}
			if err != nil {
				if !yield(nil, fmt.Errorf("%s: %w", what, err)) {
					return
				}
				// Do not spin on an error that repeats (the stream is
				// gone): the next try comes a moment later.
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
				continue
			}
			if !yield(m, nil) {
				return
			}
		}
	}
}

// streamedResult is a result read from the stream.
func (c *Client) streamedResult(m jetstream.Msg) *Result {
	h := m.Headers()
	if h == nil {
		h = nats.Header{}
	}
	typ, id := c.resultKey(m.Subject(), h)
	r := &Result{Subject: m.Subject(), Type: typ, ID: id, Status: h.Get(task.HeaderStatus), Header: h, Body: m.Data()}
	if md, err := m.Metadata(); err == nil {
		r.Seq, r.Stored = md.Sequence.Stream, md.Timestamp
	}
	return r
}

// resultKey returns the type and id of a result, from its headers or, for
// a result written by another tool, from its subject
// (results.<type>.<id>, the type possibly of several tokens).
func (c *Client) resultKey(subject string, h nats.Header) (typ, id string) {
	typ, id = h.Get(task.HeaderType), h.Get(task.HeaderID)
	rest, ok := strings.CutPrefix(subject, strings.TrimSuffix(c.o.topo.ResultsFilter(""), ">"))
	if !ok {
		return typ, id
	}
	if i := strings.LastIndexByte(rest, '.'); i > 0 {
		if typ == "" {
			typ = rest[:i]
		}
		if id == "" {
			id = rest[i+1:]
		}
	}
	return typ, id
}
