package testkit

import (
	"slices"
	"sync"
	"time"
)

// Tasks stands in for a worker's running tasks where a test needs the
// worker's side of the admin plane's task.status and task.cancel (it has
// the methods of health.RunningTasks) without a pipeline. Safe for
// concurrent use.
type Tasks struct {
	mu        sync.Mutex
	running   map[string]time.Time // "type/id" -> since
	cancelled []string
}

// NewTasks runs the tasks of running, keyed "type/id", with when each
// started. Tasks owns the map from then on (Cancel deletes from it).
func NewTasks(running map[string]time.Time) *Tasks {
	return &Tasks{running: running}
}

// Running reports whether typ/id runs, and since when.
func (r *Tasks) Running(typ, id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	since, ok := r.running[typ+"/"+id]
	return since, ok
}

// Cancel stops typ/id if it runs (it no longer does, and Cancelled names
// it) and reports whether it did.
func (r *Tasks) Cancel(typ, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[typ+"/"+id]; !ok {
		return false
	}
	delete(r.running, typ+"/"+id)
	r.cancelled = append(r.cancelled, typ+"/"+id)
	return true
}

// Cancelled lists the tasks Cancel stopped ("type/id"), in order.
func (r *Tasks) Cancelled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cancelled)
}
