package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// running knows the tasks calling their backends now, by type and id, so
// that the admin plane can say where a task is and stop one.
type running struct {
	mu sync.Mutex
	m  map[runKey]runEntry
	// cancelled are tasks cancelled while not running here: one this
	// worker fetched already (or fetches within cancelledFor) is not
	// started. nCancelled spares the task path the lock when it is empty.
	cancelled  map[runKey]time.Time
	nCancelled atomic.Int32
}

// cancelledFor is how long a cancel of a task not running here is kept:
// long enough for a task fetched before it was removed from TASKS.
const cancelledFor = time.Minute

// wasCancelled reports whether typ/id was cancelled before it started.
func (r *running) wasCancelled(typ, id string, now time.Time) bool {
	if r.nCancelled.Load() == 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, at := range r.cancelled {
		if now.Sub(at) > cancelledFor {
			delete(r.cancelled, k)
			r.nCancelled.Add(-1)
		}
	}
	_, ok := r.cancelled[runKey{typ, id}]
	return ok
}

type runKey struct{ typ, id string }

type runEntry struct {
	since  time.Time
	cancel context.CancelCauseFunc
}

// start registers a task; the returned context is cancelled (cause
// ErrCancelled) by cancel, and stop unregisters it.
func (r *running) start(ctx context.Context, typ, id string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	k := runKey{typ, id}
	r.mu.Lock()
	if r.m == nil {
		r.m = map[runKey]runEntry{}
	}
	r.m[k] = runEntry{since: time.Now(), cancel: cancel}
	r.mu.Unlock()
	return ctx, func() {
		r.mu.Lock()
		delete(r.m, k)
		r.mu.Unlock()
		cancel(nil)
	}
}

// Running reports whether the task typ/id is calling its backends on this
// worker now, and since when.
func (w *Worker) Running(typ, id string) (since time.Time, ok bool) {
	w.running.mu.Lock()
	defer w.running.mu.Unlock()
	e, ok := w.running.m[runKey{typ, id}]
	return e.since, ok
}

// Cancel stops the task typ/id if it is running on this worker: its
// backend call's context is cancelled and the task is dead-lettered as
// cancelled (a replay runs it after all). It reports whether the task was
// running here. A task not running here is remembered for a minute: if
// this worker holds it already (fetched, not started), it is dead-lettered
// as cancelled instead of run.
func (w *Worker) Cancel(typ, id string) bool {
	k := runKey{typ, id}
	w.running.mu.Lock()
	e, ok := w.running.m[k]
	if !ok {
		if w.running.cancelled == nil {
			w.running.cancelled = map[runKey]time.Time{}
		}
		if _, dup := w.running.cancelled[k]; !dup {
			w.running.nCancelled.Add(1)
		}
		w.running.cancelled[k] = time.Now()
	}
	w.running.mu.Unlock()
	if ok {
		e.cancel(ErrCancelled)
		w.log.Warn("task cancelled by an operator", "task_id", id, "type", typ)
	}
	return ok
}
