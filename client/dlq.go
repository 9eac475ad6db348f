package client

import (
	"context"
	"iter"

	"github.com/breakwater/breakwater/dlq"
)

// DLQAdmin returns the DLQ admin the DLQ methods use, opening the DLQ and
// RESULTS streams at its first use (the error then says when there is no
// DLQ stream), for what they do not cover.
func (c *Client) DLQAdmin(ctx context.Context) (*dlq.Admin, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.admin != nil {
		return c.admin, nil
	}
	var opts []dlq.AdminOption
	if on, tr, prop := c.tracing(); on {
		opts = append(opts, dlq.WithTracing(tr, prop))
	}
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	adm, err := dlq.NewAdmin(ctx, c.js, c.o.topo, opts...)
	if err != nil {
		return nil, StreamHint(err, c.o.topo.DLQStream())
	}
	c.admin = adm
	return adm, nil
}

// DeadLetters yields the DLQ entries f selects, in stream order, up to
// f.Limit. It reads the entries present when it starts, a page at a time
// (never the whole selection), and stops at the first error, which it
// yields. Reading the DLQ is the operator's right, not a client's.
func (c *Client) DeadLetters(ctx context.Context, f dlq.Filter) iter.Seq2[*dlq.Item, error] {
	return func(yield func(*dlq.Item, error) bool) {
		adm, err := c.DLQAdmin(ctx)
		if err != nil {
			yield(nil, err)
			return
		}
		stopped := false
		err = adm.Scan(ctx, f, func(i *dlq.Item) error {
			if !yield(i, nil) {
				stopped = true
				return errStop
			}
			return nil
		})
		if err != nil && !stopped {
			yield(nil, err)
		}
	}
}

// errStop ends a scan the caller stopped iterating.
var errStop = stopError{}

type stopError struct{}

func (stopError) Error() string { return "iteration stopped" }

// DeadLetter returns the DLQ entry at seq, or an error wrapping
// dlq.ErrNotFound.
func (c *Client) DeadLetter(ctx context.Context, seq uint64) (*dlq.Item, error) {
	adm, err := c.DLQAdmin(ctx)
	if err != nil {
		return nil, err
	}
	return adm.Get(ctx, seq)
}

// Replay puts the entries o.Filter selects back on their original subject
// (same Task-Id, Dlq-Replays incremented, a fresh Nats-Msg-Id) and deletes
// each entry only after the new publish is acknowledged; with o.DryRun it
// changes nothing and o.OnEntry learns what each would do. See
// dlq.(*Admin).Replay for the guarantees of an interrupted run.
func (c *Client) Replay(ctx context.Context, o dlq.ReplayOptions) (dlq.Summary, error) {
	adm, err := c.DLQAdmin(ctx)
	if err != nil {
		return dlq.Summary{}, err
	}
	return adm.Replay(ctx, o)
}

// Purge deletes the entries o.Filter selects for good (with o.DryRun,
// nothing).
func (c *Client) Purge(ctx context.Context, o dlq.PurgeOptions) (dlq.Summary, error) {
	adm, err := c.DLQAdmin(ctx)
	if err != nil {
		return dlq.Summary{}, err
	}
	return adm.Purge(ctx, o)
}

// ReplaySubject is where the entry's task goes back to on a replay.
func (c *Client) ReplaySubject(i *dlq.Item) string { return dlq.ReplaySubject(c.o.topo, i) }
