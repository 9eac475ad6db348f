package pipeline

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// parking holds the tasks of routes that cannot be served now (every
// backend's breaker open, or the route paused by an operator) instead of
// handing them back with NakWithDelay: a held task keeps its delivery
// count, costs no backend call and no goroutine, and is kept alive by
// progress's InProgress like any task in flight. The consumer is shared by
// every route, so the worker cannot stop fetching one route's tasks alone;
// holding them is the per-route equivalent. Past max held tasks, the rest
// go back to the stream with a delay, so an outage cannot hold the whole
// consumer's ack-pending budget.
type parking struct {
	max  int
	wake chan struct{} // a route became due sooner or was resumed

	pausedN atomic.Int32 // routes paused now: the common zero needs no lock

	mu     sync.Mutex
	n      int
	routes map[string]*parkedRoute
}

type parkedRoute struct {
	until  time.Time // held until then; zero with paused
	paused bool
	jobs   []*delivery
}

func newParking(max int) *parking {
	return &parking{max: max, wake: make(chan struct{}, 1), routes: map[string]*parkedRoute{}}
}

// paused reports whether route is paused by an operator.
func (p *parking) paused(route string) bool {
	if p.pausedN.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.routes[route]
	return r != nil && r.paused
}

// hold parks j for route until the given time (ignored while the route
// is paused). It returns false when the parking is full: the caller then
// settles the task itself.
func (p *parking) hold(route string, j *delivery, until time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n >= p.max {
		return false
	}
	r := p.routes[route]
	if r == nil {
		r = &parkedRoute{}
		p.routes[route] = r
	}
	sooner := len(r.jobs) == 0 || until.Before(r.until)
	// Held tasks leave together, at the time the latest news of the
	// route's breakers gave: the first trial call then decides for all.
	r.until = until
	r.jobs = append(r.jobs, j)
	p.n++
	if sooner {
		p.signal()
	}
	return true
}

// setPaused pauses or resumes route; resuming releases its tasks at once.
func (p *parking) setPaused(route string, paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.routes[route]
	if r == nil {
		r = &parkedRoute{}
		p.routes[route] = r
	}
	if r.paused != paused {
		if paused {
			p.pausedN.Add(1)
		} else {
			p.pausedN.Add(-1)
		}
	}
	r.paused = paused
	if !paused {
		r.until = time.Time{}
		p.signal()
	}
}

func (p *parking) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// due takes the tasks whose time has come and returns the next time one
// will (zero: none waiting).
func (p *parking) due(now time.Time) (out []*delivery, next time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, r := range p.routes {
		switch {
		case len(r.jobs) == 0:
			if !r.paused {
				delete(p.routes, name)
			}
		case r.paused:
		case !r.until.After(now):
			out = append(out, r.jobs...)
			p.n -= len(r.jobs)
			r.jobs = nil
		case next.IsZero() || r.until.Before(next):
			next = r.until
		}
	}
	return out, next
}

// takeAll empties the parking (drain).
func (p *parking) takeAll() []*delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*delivery
	for _, r := range p.routes {
		out = append(out, r.jobs...)
		r.jobs = nil
	}
	p.n = 0
	return out
}

// len is the number of tasks held.
func (p *parking) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// pausedRoutes lists the routes paused now, sorted.
func (p *parking) pausedRoutes() []string {
	if p.pausedN.Load() == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for name, r := range p.routes {
		if r.paused {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
