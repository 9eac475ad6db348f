package pipeline

import (
	"context"
	"sync"
	"time"
)

// running knows the tasks calling their backends now, by type and id, so
// that the admin plane can say where a task is and stop one.
type running struct {
	mu sync.Mutex
	m  map[runKey]runEntry
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
// running here.
func (w *Worker) Cancel(typ, id string) bool {
	w.running.mu.Lock()
	e, ok := w.running.m[runKey{typ, id}]
	w.running.mu.Unlock()
	if ok {
		e.cancel(ErrCancelled)
		w.log.Warn("task cancelled by an operator", "task_id", id, "type", typ)
	}
	return ok
}
