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

// DefaultWindow is how many entries, payloads included, a bulk Replay or
// Purge holds in memory at most when the options give no window: the DLQ
// has no size limit by default, so the selection is read a page at a time
// and never whole. Four pages of DefaultParallel keep the workers fed
// while the next page is read.
const DefaultWindow = 4 * DefaultParallel

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
	// Parallel entries in flight; default DefaultParallel, at most Window.
	Parallel int
	// Window is the most entries held in memory at once, read ahead or in
	// flight; default DefaultWindow.
	Window int
	// EntryTimeout bounds each entry's work; default DefaultEntryTimeout.
	EntryTimeout time.Duration
	// Progress, when set, is called after each entry with the count done
	// and the count selected, never concurrently.
	Progress func(done, total int)
	// OnEntry, when set, is called for each entry with its outcome (or
	// the outcome it would have) or its error, never concurrently.
	OnEntry func(i *Item, out Outcome, err error)
}

// PurgeOptions select the entries a bulk purge deletes; the fields mean
// what they mean in ReplayOptions.
type PurgeOptions struct {
	Filter       Filter
	DryRun       bool
	Parallel     int
	Window       int
	EntryTimeout time.Duration
	Progress     func(done, total int)
	OnEntry      func(i *Item, out Outcome, err error)
}

// Summary counts what a bulk Replay or Purge did.
type Summary struct {
	// Selected is the entries matching the filter when the run began;
	// one removed by someone else before its turn is neither done nor
	// failed.
	Selected int
	Replayed int
	Skipped  int // result already stored: entry removed, nothing published
	Purged   int
	Failed   int // entries tried that failed; they stay in the DLQ
	// DeadlinesDropped counts the replayed entries (of Replayed) that were
	// expired: they went back without their Task-Deadline
	// (ReplayDropsDeadline).
	DeadlinesDropped int
	// MaxHeld is the most entries the run held in memory at once, or had
	// asked the server for (read ahead, in flight, or on their way in a
	// page): at most the window.
	MaxHeld int
}

// Done is the number of entries settled (replayed, skipped or purged).
func (s Summary) Done() int { return s.Replayed + s.Skipped + s.Purged }

// Replay replays every entry o.Filter selects (see ReplayOne), o.Parallel
// at a time and at most o.Rate a second. Entries are selected first (a
// read of their headers), so entries stored during the run wait for the
// next one; they are then read a page at a time, at most o.Window held at
// once. When ctx ends it stops starting entries and waits for those in
// flight to finish (each within EntryTimeout, ctx's end notwithstanding),
// so that when it returns nothing it started is still on its way to the
// server and the summary counts exactly what the streams hold; the error
// then wraps ctx's. Running it again finishes the job without losing or
// duplicating a task. Failed entries stay in the DLQ and make the error
// wrap ErrIncomplete.
func (a *Admin) Replay(ctx context.Context, o ReplayOptions) (Summary, error) {
	var lim *rate.Limiter
	if o.Rate > 0 && !o.DryRun {
		// A burst of one: the rate holds from the first entry on.
		lim = rate.NewLimiter(rate.Limit(o.Rate), 1)
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
	return a.bulk(ctx, bulkOptions{o.Filter, o.Parallel, o.Window, o.EntryTimeout, o.Progress, o.OnEntry, lim}, "replay", do)
}

// Purge deletes every entry o.Filter selects, as Replay goes through them.
func (a *Admin) Purge(ctx context.Context, o PurgeOptions) (Summary, error) {
	do := func(ctx context.Context, i *Item) (Outcome, error) {
		if o.DryRun {
			return Purged, nil
		}
		return Purged, a.PurgeOne(ctx, i)
	}
	return a.bulk(ctx, bulkOptions{o.Filter, o.Parallel, o.Window, o.EntryTimeout, o.Progress, o.OnEntry, nil}, "purge", do)
}

type bulkOptions struct {
	filter       Filter
	parallel     int
	window       int
	entryTimeout time.Duration
	progress     func(done, total int)
	onEntry      func(*Item, Outcome, error)
	limit        *rate.Limiter // paces the start of entries; nil: unpaced
}

// selection counts the entries f selects, reading headers only, and
// returns the sequence of the last one: the run stops there, whatever is
// stored meanwhile.
func (a *Admin) selection(ctx context.Context, f Filter) (n int, last uint64, err error) {
	err = a.scan(ctx, f, scanOptions{headersOnly: true}, func(i *Item) error {
		n++
		last = max(last, i.Seq)
		return nil
	})
	return n, last, err
}

func (a *Admin) bulk(ctx context.Context, o bulkOptions, verb string, do func(context.Context, *Item) (Outcome, error)) (Summary, error) {
	if o.window <= 0 {
		o.window = DefaultWindow
	}
	if o.parallel <= 0 {
		o.parallel = DefaultParallel
	}
	if o.entryTimeout <= 0 {
		o.entryTimeout = DefaultEntryTimeout
	}
	// Select first: progress needs a total, and the run must not chase
	// entries stored while it goes.
	var sum Summary
	total, last, err := a.selection(ctx, o.filter)
	sum.Selected = total
	if err != nil || total == 0 {
		return sum, err
	}
	win := newWindow(o.window)
	var (
		mu       sync.Mutex
		tried    int
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan *Item)
	for range min(o.parallel, o.window, total) {
		wg.Go(func() {
			for i := range next {
				// An entry once started is finished even when ctx ends:
				// cancelling it half-way would leave a publish or a
				// delete on the wire that can still land after bulk
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
					if ReplayDropsDeadline(i) {
						sum.DeadlinesDropped++
					}
				case out == AlreadyDone:
					sum.Skipped++
				case out == Purged:
					sum.Purged++
				}
				if o.onEntry != nil {
					o.onEntry(i, out, err)
				}
				if o.progress != nil {
					o.progress(tried, total)
				}
				mu.Unlock()
				win.release(1)
			}
		})
	}
	scanErr := a.scan(ctx, o.filter, scanOptions{upTo: last, win: win}, func(i *Item) error {
		// Checked first: select picks at random among ready cases.
		err := ctx.Err()
		if err == nil && o.limit != nil {
			// Paced before the entry starts, so that ctx ending
			// during the wait leaves it untouched.
			err = o.limit.Wait(ctx)
		}
		if err == nil {
			select {
			case next <- i:
				return nil
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		win.release(1)
		return err
	})
	close(next)
	wg.Wait()
	sum.MaxHeld = win.maxHeld()
	if err := ctx.Err(); err != nil {
		return sum, fmt.Errorf("%s interrupted after %d of %d entries: %w", verb, tried, total, err)
	}
	if scanErr != nil {
		return sum, fmt.Errorf("%s stopped after %d of %d entries: %w", verb, tried, total, scanErr)
	}
	if firstErr != nil {
		return sum, fmt.Errorf("%w: %d of %d failed, first: %w", ErrIncomplete, sum.Failed, total, firstErr)
	}
	return sum, nil
}

// window bounds the entries a bulk run holds. A scan takes slots before
// it reads a page, one per entry it asks for; an entry that arrives keeps
// its slot until its work is done; slots no entry filled are given back
// after the page. So the entries in memory, counting those on their way
// or buffered by the client library for a page, never outnumber the
// slots, and the slots taken are what the run may hold. A nil window
// bounds nothing: its pages are scanPage entries.
type window struct {
	slots chan struct{}

	mu         sync.Mutex
	used, peak int
}

func newWindow(size int) *window {
	return &window{slots: make(chan struct{}, size)}
}

// reserve waits for a free slot, then takes as many more as are free, up
// to most in all, and returns how many it took.
func (w *window) reserve(ctx context.Context, most int) (int, error) {
	if w == nil {
		return most, nil
	}
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	n := 1
more:
	for n < most {
		select {
		case w.slots <- struct{}{}:
			n++
		default:
			break more
		}
	}
	w.mu.Lock()
	w.used += n
	w.peak = max(w.peak, w.used)
	w.mu.Unlock()
	return n, nil
}

// release gives back n slots: entries done with, or asked for and never
// come.
func (w *window) release(n int) {
	if w == nil || n == 0 {
		return
	}
	w.mu.Lock()
	w.used -= n
	w.mu.Unlock()
	for range n {
		<-w.slots
	}
}

// maxHeld is the most slots taken at once so far.
func (w *window) maxHeld() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}
