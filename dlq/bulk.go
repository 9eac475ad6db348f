package dlq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrIncomplete means a bulk Replay or Purge left some selected entries
// untouched or failed on them; the Summary says how many.
var ErrIncomplete = errors.New("not every selected DLQ entry was done")

// DefaultParallel is how many entries a bulk Replay or Purge works on at
// once: each is a few round trips (result lookup, publish, delete), so one
// at a time would cost one latency per entry.
const DefaultParallel = 16

// DefaultEntryTimeout bounds the work on one entry when the options give
// none.
const DefaultEntryTimeout = 10 * time.Second

// ReplayOptions select and pace a bulk replay.
type ReplayOptions struct {
	Filter Filter
	// Rate is the most replays a second; 0 is unlimited.
	Rate float64
	// DryRun changes nothing: OnEntry learns what each entry would do
	// (the result lookup, a read, is still made).
	DryRun bool
	// Parallel entries in flight; default DefaultParallel.
	Parallel int
	// EntryTimeout bounds each entry's work; default DefaultEntryTimeout.
	EntryTimeout time.Duration
	// Progress, when set, is called after each entry with the count done
	// and the count selected, never concurrently.
	Progress func(done, total int)
	// OnEntry, when set, is called for each entry with its outcome (or
	// the outcome it would have) or its error, never concurrently.
	OnEntry func(i *Item, out Outcome, err error)
}

// PurgeOptions select the entries a bulk purge deletes.
type PurgeOptions struct {
	Filter       Filter
	DryRun       bool
	Parallel     int
	EntryTimeout time.Duration
	Progress     func(done, total int)
	OnEntry      func(i *Item, out Outcome, err error)
}

// Summary counts what a bulk Replay or Purge did.
type Summary struct {
	Selected int // entries matching the filter when the run began
	Replayed int
	Skipped  int // result already stored: entry removed, nothing published
	Purged   int
	Failed   int // entries tried that failed; they stay in the DLQ
}

// Done is the number of entries settled (replayed, skipped or purged).
func (s Summary) Done() int { return s.Replayed + s.Skipped + s.Purged }

// Replay replays every entry o.Filter selects (see ReplayOne), o.Parallel
// at a time and at most o.Rate a second. Entries are selected first, so
// entries stored during the run wait for the next one. When ctx ends it
// stops starting entries and waits for those in flight to finish (each
// within EntryTimeout, ctx's end notwithstanding), so that when it returns
// nothing it started is still on its way to the server and the summary
// counts exactly what the streams hold; the error then wraps ctx's.
// Running it again finishes the job without losing or duplicating a task.
// Failed entries stay in the DLQ and make the error wrap ErrIncomplete.
func (a *Admin) Replay(ctx context.Context, o ReplayOptions) (Summary, error) {
	var lim *rate.Limiter
	if o.Rate > 0 {
		// A burst of one: the rate holds from the first entry on.
		lim = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	if o.DryRun {
		lim = nil // a dry run changes nothing: no reason to pace it
	}
	do := func(ctx context.Context, i *Item) (Outcome, error) {
		if o.DryRun {
			done, err := a.resultStored(ctx, i)
			if done {
				return AlreadyDone, err
			}
			return Replayed, err
		}
		return a.ReplayOne(ctx, i)
	}
	return a.bulk(ctx, bulkOptions{o.Filter, o.Parallel, o.EntryTimeout, o.Progress, o.OnEntry, lim}, "replay", do)
}

// Purge deletes every entry o.Filter selects, as Replay goes through them.
func (a *Admin) Purge(ctx context.Context, o PurgeOptions) (Summary, error) {
	do := func(ctx context.Context, i *Item) (Outcome, error) {
		if o.DryRun {
			return Purged, nil
		}
		return Purged, a.PurgeOne(ctx, i)
	}
	return a.bulk(ctx, bulkOptions{o.Filter, o.Parallel, o.EntryTimeout, o.Progress, o.OnEntry, nil}, "purge", do)
}

type bulkOptions struct {
	filter       Filter
	parallel     int
	entryTimeout time.Duration
	progress     func(done, total int)
	onEntry      func(*Item, Outcome, error)
	limit        *rate.Limiter // paces the start of entries; nil: unpaced
}

func (a *Admin) bulk(ctx context.Context, o bulkOptions, verb string, do func(context.Context, *Item) (Outcome, error)) (Summary, error) {
	if o.parallel <= 0 {
		o.parallel = DefaultParallel
	}
	if o.entryTimeout <= 0 {
		o.entryTimeout = DefaultEntryTimeout
	}
	// Select first: progress needs a total, and the entries are then
	// changed from a stable list while the stream changes under them.
	items, err := a.List(ctx, o.filter)
	var sum Summary
	sum.Selected = len(items)
	if err != nil {
		return sum, err
	}
	var (
		mu       sync.Mutex
		tried    int
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan *Item)
	for range min(o.parallel, len(items)) {
		wg.Go(func() {
			for i := range next {
				// An entry once started is finished even when ctx ends:
				// cancelling it half-way would leave a publish or a
				// delete on the wire that can still land after Bulk
				// returned, so its summary would not be what the
				// streams hold. EntryTimeout still bounds it.
				ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.entryTimeout)
				out, err := do(ictx, i)
				cancel()
				mu.Lock()
				tried++
				switch {
				case err != nil:
					sum.Failed++
					if firstErr == nil {
						firstErr = err
					}
				case out == Replayed:
					sum.Replayed++
				case out == AlreadyDone:
					sum.Skipped++
				case out == Purged:
					sum.Purged++
				}
				if o.onEntry != nil {
					o.onEntry(i, out, err)
				}
				if o.progress != nil {
					o.progress(tried, len(items))
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, i := range items {
		// Checked first: select picks at random among ready cases.
		if ctx.Err() != nil {
			break
		}
		// Paced here, before the entry is started, so that ctx ending
		// during the wait leaves it untouched.
		if o.limit != nil && o.limit.Wait(ctx) != nil {
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return sum, fmt.Errorf("%s interrupted after %d of %d entries: %w", verb, tried, len(items), err)
	}
	if firstErr != nil {
		return sum, fmt.Errorf("%w: %d of %d failed, first: %w", ErrIncomplete, sum.Failed, len(items), firstErr)
	}
	return sum, nil
}
