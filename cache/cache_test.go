package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/internal/testkit"
)

// clock is a controlled clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newCache(t testing.TB, o cache.Options) *cache.Cache {
	t.Helper()
	c, err := cache.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestTTLToTheSecond(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	c := newCache(t, cache.Options{Now: clk.Now})
	p := cache.Policy{TTL: 10 * time.Second}
	ctx := context.Background()
	c.Set("k", p, []byte("v"), "svc")
	clk.Add(9 * time.Second)
	if e, ok := c.Get(ctx, "k", p); !ok || string(e.Body) != "v" || e.Backend != "svc" {
		t.Fatalf("at ttl-1s: %v %+v, want a hit", ok, e)
	}
	clk.Add(time.Second)
	if _, ok := c.Get(ctx, "k", p); ok {
		t.Fatal("at ttl: hit, want a miss (expired)")
	}
	st := c.Stats()
	if st.Hits != 1 || st.Misses != 1 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKey(t *testing.T) {
	p := []byte(`{"q":1}`)
	kh := []string{"x-model"}
	base := cache.Key("t", p, nats.Header{"X-Model": {"a"}, "X-Other": {"1"}}, kh)
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"other headers do not count", base, cache.Key("t", p, nats.Header{"X-Model": {"a"}, "X-Other": {"2"}}, kh), true},
		{"header name case does not count", base, cache.Key("t", p, nats.Header{"x-model": {"a"}}, []string{"X-Model"}), true},
		{"key header value counts", base, cache.Key("t", p, nats.Header{"X-Model": {"b"}}, kh), false},
		{"payload counts", base, cache.Key("t", []byte(`{"q":2}`), nats.Header{"X-Model": {"a"}}, kh), false},
		{"type counts", base, cache.Key("u", p, nats.Header{"X-Model": {"a"}}, kh), false},
		{"key header order does not count",
			cache.Key("t", p, nats.Header{"X-Model": {"a"}, "X-B": {"b"}}, []string{"x-b", "x-model"}),
			cache.Key("t", p, nats.Header{"X-Model": {"a"}, "X-B": {"b"}}, []string{"x-model", "x-b"}), true},
		{"type and payload are not concatenated", cache.Key("ab", []byte("c"), nil, nil), cache.Key("a", []byte("bc"), nil, nil), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.a == tc.b) != tc.same {
				t.Fatalf("same key: %v, want %v", tc.a == tc.b, tc.same)
			}
		})
	}
}

// A flood of distinct large results stays within the size cap; the oldest
// are evicted.
func TestSizeCapHolds(t *testing.T) {
	c := newCache(t, cache.Options{MaxSizeMB: 2})
	p := cache.Policy{TTL: time.Hour}
	body := bytes.Repeat([]byte("x"), 4096)
	for i := range 5000 { // 20 MB of results
		c.Set(fmt.Sprint("k", i), p, body, "svc")
	}
	st := c.Stats()
	if st.Bytes > 2<<20 {
		t.Fatalf("L1 holds %d bytes, over the 2 MiB cap", st.Bytes)
	}
	if st.Evictions == 0 || st.Entries >= 5000 {
		t.Fatalf("stats %+v: want evictions and fewer entries", st)
	}
	if _, ok := c.Get(context.Background(), "k4999", p); !ok {
		t.Fatal("the newest entry was evicted")
	}
	if _, ok := c.Get(context.Background(), "k0", p); ok {
		t.Fatal("the oldest entry survived a flood 10× the cap")
	}
}

func TestSingleflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := cache.New(t.Context(), cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		p := cache.Policy{TTL: time.Minute}
		var calls atomic.Int64
		release := make(chan struct{})
		const n = 50
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				e, _, err := c.Do("same", p, func() ([]byte, string, error) {
					calls.Add(1)
					<-release
					return []byte("answer"), "svc", nil
				})
				if err != nil || string(e.Body) != "answer" {
					t.Errorf("caller %d: %v %q", i, err, e.Body)
				}
			})
		}
		synctest.Wait() // all 50 are in: one calling, the rest waiting for it
		close(release)
		wg.Wait()
		if calls.Load() != 1 {
			t.Fatalf("fn ran %d times, want 1", calls.Load())
		}
		if st := c.Stats(); st.Shared != n-1 {
			t.Fatalf("shared %d, want %d", st.Shared, n-1)
		}
		if _, ok := c.Get(context.Background(), "same", p); !ok {
			t.Fatal("result not cached")
		}
	})
}

func TestErrorsNotCached(t *testing.T) {
	c := newCache(t, cache.Options{})
	p := cache.Policy{TTL: time.Minute}
	boom := errors.New("503")
	if _, _, err := c.Do("k", p, func() ([]byte, string, error) { return nil, "", boom }); !errors.Is(err, boom) {
		t.Fatalf("Do = %v", err)
	}
	if _, ok := c.Get(context.Background(), "k", p); ok {
		t.Fatal("an error was cached")
	}
}

// serverKV starts a real server and returns the shared bucket.
func serverKV(t *testing.T) (*testkit.Server, jetstream.KeyValue) {
	t.Helper()
	srv := testkit.StartServer(t)
	_, js := srv.JetStream(t)
	kv, err := cache.EnsureBucket(context.Background(), js, bus.Topology{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return srv, kv
}

func TestSharedBetweenWorkers(t *testing.T) {
	srv, kv := serverKV(t)
	a := newCache(t, cache.Options{KV: kv})
	b := newCache(t, cache.Options{KV: kv})
	ctx := context.Background()
	shared := cache.Policy{TTL: time.Minute, Shared: true}
	a.Set("k", shared, []byte("from a"), "svc")
	var e cache.Entry
	var ok bool
	testkit.Eventually(t, 5*time.Second, "a's result in L2", func() (bool, string) { // the L2 write is asynchronous
		e, ok = b.Get(ctx, "k", shared)
		return ok, "a miss"
	})
	if !ok || string(e.Body) != "from a" {
		t.Fatalf("b: %v %q, want a's result from L2", ok, e.Body)
	}
	if st := b.Stats(); st.L2Hits != 1 {
		t.Fatalf("b stats %+v, want one L2 hit", st)
	}
	// Filled into b's L1: served with the server gone.
	srv.Shutdown()
	if _, ok := b.Get(ctx, "k", shared); !ok {
		t.Fatal("L2 hit not kept in L1")
	}
	// L2 down: a miss, not an error.
	if _, ok := b.Get(ctx, "other", shared); ok {
		t.Fatal("hit for a key never set")
	}
	if st := b.Stats(); st.L2Errors == 0 {
		t.Errorf("stats %+v, want an L2 error counted", st)
	}
	// Not shared: never read from L2.
	c := newCache(t, cache.Options{KV: kv})
	if _, ok := c.Get(ctx, "k", cache.Policy{TTL: time.Minute}); ok {
		t.Fatal("a route without shared read L2")
	}
}
