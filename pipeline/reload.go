package pipeline

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
)

// Live is the part of a worker's options a config reload replaces: the
// routes (with their backends and policies), the Task-Reply-To rules and
// the result cache. A task reads it once, when its processing starts, and
// keeps what it read until its backend calls are done.
type Live struct {
	Router        *resilience.Router
	Reply         *task.ReplyRules
	Cache         *cache.Cache
	CachePolicies map[string]cache.Policy
	// Retired, when set, is called once, on its own goroutine, after
	// this Live has been replaced and the last task that started with it
	// has finished its backend calls: the place to close the backends and
	// the cache the new Live no longer uses.
	Retired func()
}

// generation is one Live and the tasks processing with it.
type generation struct {
	Live
	users    atomic.Int64
	replaced atomic.Bool
	retire   sync.Once
}

// done retires g once it is replaced and unused.
func (g *generation) done() {
	if g.replaced.Load() && g.users.Load() == 0 {
		g.retire.Do(func() {
			if g.Retired != nil {
				go g.Retired()
			}
		})
	}
}

// acquire returns the current generation, counted as used until release.
func (w *Worker) acquire() *generation {
	for {
		g := w.live.Load()
		g.users.Add(1)
		// Replaced meanwhile: its Retired may already run; take the new one.
		if w.live.Load() == g {
			return g
		}
		w.release(g)
	}
}

func (w *Worker) release(g *generation) {
	if g.users.Add(-1) == 0 {
		g.done()
	}
}

// SetLive replaces the routes, reply rules and cache for the tasks that
// start processing after it; tasks already processing finish with what
// they began with, and the old Live's Retired runs once they have. Router
// is required. Safe for concurrent use.
func (w *Worker) SetLive(l Live) error {
	if l.Router == nil {
		return fmt.Errorf("%w: SetLive: Router is required", ErrInvalidOption)
	}
	old := w.live.Swap(&generation{Live: l})
	old.replaced.Store(true)
	old.done()
	return nil
}

// CurrentLive returns what tasks starting now are processed with.
func (w *Worker) CurrentLive() Live {
	l := w.live.Load().Live
	l.Retired = nil
	return l
}
