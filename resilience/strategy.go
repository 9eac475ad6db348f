package resilience

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Strategy picks the order in which a route tries its targets. The first
// is the one a task goes to; the rest are the failover order.
type Strategy interface {
	// Order returns a permutation of the indexes of targets.
	Order(targets []Target) []int
}

// NewStrategy returns the strategy called name: failover (in order),
// round_robin, weighted (weights by target name; missing ones weigh 1) or
// least_latency.
func NewStrategy(name string, weights map[string]int) (Strategy, error) {
	switch name {
	case "", "failover":
		return failover{}, nil
	case "round_robin":
		return &roundRobin{}, nil
	case "weighted":
		return weighted{weights: weights}, nil
	case "least_latency":
		return leastLatency{}, nil
	}
	return nil, fmt.Errorf("unknown strategy %q", name)
}

type failover struct{}

func (failover) Order(targets []Target) []int { return identity(len(targets)) }

// roundRobin starts each task at the next target, then fails over in
// order from there.
type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) Order(targets []Target) []int {
	n := len(targets)
	if n == 0 {
		return nil
	}
	start := int(r.next.Add(1)-1) % n
	out := make([]int, n)
	for i := range out {
		out[i] = (start + i) % n
	}
	return out
}

// weighted picks the first target at random in proportion to its weight,
// then fails over in order.
type weighted struct{ weights map[string]int }

func (w weighted) Order(targets []Target) []int {
	total := 0
	for _, t := range targets {
		total += w.weight(t.Name)
	}
	if total == 0 {
		return identity(len(targets))
	}
	pick := rand.IntN(total)
	first := 0
	for i, t := range targets {
		if pick -= w.weight(t.Name); pick < 0 {
			first = i
			break
		}
	}
	return moveFirst(identity(len(targets)), first)
}

func (w weighted) weight(name string) int {
	if v, ok := w.weights[name]; ok {
		return v
	}
	return 1
}

// leastLatency picks two targets at random and goes first to the one with
// the lower score (EWMA latency × failure penalty): the power of two
// choices, which avoids herding onto one backend; then fails over in order.
type leastLatency struct{}

func (leastLatency) Order(targets []Target) []int {
	n := len(targets)
	order := identity(n)
	if n < 2 {
		return order
	}
	a := rand.IntN(n)
	b := rand.IntN(n - 1)
	if b >= a {
		b++
	}
	if targets[b].score() < targets[a].score() {
		a = b
	}
	return moveFirst(order, a)
}

func identity(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// moveFirst moves order's element i to the front, keeping the rest in order.
func moveFirst(order []int, i int) []int {
	v := order[i]
	copy(order[1:i+1], order[:i])
	order[0] = v
	return order
}

// latencyStats keeps an exponentially weighted moving average of a
// target's call latency and failure ratio, updated on every call.
type latencyStats struct {
	mu      sync.Mutex
	latency float64 // EWMA, seconds
	failure float64 // EWMA of 0/1
	seen    bool
}

// ewmaAlpha weighs the newest call: about the last 10 calls matter.
const ewmaAlpha = 0.2

func (s *latencyStats) observe(d time.Duration, failed bool) {
	f := 0.0
	if failed {
		f = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seen {
		s.latency, s.failure, s.seen = d.Seconds(), f, true
		return
	}
	s.latency += ewmaAlpha * (d.Seconds() - s.latency)
	s.failure += ewmaAlpha * (f - s.failure)
}

// score is latency × (1 + 10 × failure ratio); an unseen target scores 0
// so that it gets tried.
func (s *latencyStats) score() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seen {
		return 0
	}
	return s.latency * (1 + 10*s.failure)
}

func (t *Target) score() float64 {
	if t.stats == nil {
		return math.MaxFloat64 / 2
	}
	return t.stats.score()
}
