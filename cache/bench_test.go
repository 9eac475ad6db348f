package cache_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/cache"
)

// The hit path as the worker runs it: key of a ~200-byte payload, then an
// L1 lookup. Target: well under 5 µs.
//
//	go test -run '^$' -bench . -benchmem -count 5 ./cache/
func BenchmarkHit(b *testing.B) {
	c := newCache(b, cache.Options{})
	p := cache.Policy{TTL: time.Hour, KeyHeaders: []string{"X-Model"}}
	payload := bytes.Repeat([]byte("p"), 200)
	h := nats.Header{"X-Model": {"m1"}, "Task-Id": {"t"}}
	c.Set(cache.Key("echo", payload, h, p.KeyHeaders), p, payload, "svc")
	ctx := context.Background()
	for b.Loop() {
		if _, ok := c.Get(ctx, cache.Key("echo", payload, h, p.KeyHeaders), p); !ok {
			b.Fatal("miss")
		}
	}
}

// A miss then the store of its result.
func BenchmarkMissSet(b *testing.B) {
	c := newCache(b, cache.Options{})
	p := cache.Policy{TTL: time.Hour}
	payload := bytes.Repeat([]byte("p"), 200)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		payload[0], payload[1], payload[2] = byte(i), byte(i>>8), byte(i>>16)
		k := cache.Key("echo", payload, nil, nil)
		if _, ok := c.Get(ctx, k, p); !ok {
			c.Set(k, p, payload, "svc")
		}
	}
}
