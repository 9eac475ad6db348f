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

// runSlot is a pool goroutine's cancellable context, reused by its tasks
// one after another until one of them is cancelled: a task costs a map
// entry, not a context of its own registered with the worker's.
type runSlot struct {
	parent context.Context
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newRunSlot(parent context.Context) *runSlot {
	s := &runSlot{parent: parent}
	s.ctx, s.cancel = context.WithCancelCause(parent)
	return s
}

// start registers a task running since then; Worker.Cancel calls cancel
// with ErrCancelled until stop unregisters it.
func (r *running) start(typ, id string, since time.Time, cancel context.CancelCauseFunc) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[runKey]runEntry{}
	}
	r.m[runKey{typ, id}] = runEntry{since: since, cancel: cancel}
	r.mu.Unlock()
}

// stop unregisters the task typ/id; slot, whose context a cancel may
// have reached, gets a fresh one for its next task.
func (r *running) stop(slot *runSlot, typ, id string) {
	r.mu.Lock()
	delete(r.m, runKey{typ, id})
	r.mu.Unlock()
	// Cancels happen under r.mu while the task is registered, so none
	// reaches the slot after this point for this task.
	if slot.ctx.Err() != nil {
		slot.cancel(nil)
		slot.ctx, slot.cancel = context.WithCancelCause(slot.parent)
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
	if ok {
		// Under the lock: the slot runs this task until stop, which
		// takes the lock, so the cancel cannot reach its next task.
		e.cancel(ErrCancelled)
	}
	w.running.mu.Unlock()
	if ok {
		w.log.Warn("task cancelled by an operator", "task_id", id, "type", typ)
	}
	return ok
}
