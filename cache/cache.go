// Package cache is the worker's result cache: bigcache in each worker (L1,
// a hard size cap, microseconds per hit), optionally a JetStream key-value
// bucket shared by every worker (L2), and singleflight so that identical
// tasks in flight at once make one backend call.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/breakwater/breakwater/bus"
)

// Policy is one route's caching (the route's `cache` config).
type Policy struct {
	// TTL is how long a result is served from the cache, to the second.
	TTL time.Duration
	// KeyHeaders are task headers that are part of the key, besides the
	// type and the payload.
	KeyHeaders []string
	// Shared stores results in the L2 bucket too, for every worker.
	Shared bool
}

// Entry is a cached result.
type Entry struct {
	Body    []byte
	Backend string    // the backend that computed it
	Expires time.Time // after it the entry is a miss
}

// Options configure a Cache.
type Options struct {
	// MaxSizeMB is L1's hard size cap. Default 64.
	MaxSizeMB int
	// MaxTTL is the longest TTL of any route: entries older than it are
	// freed by L1's cleaner. Default 24h.
	MaxTTL time.Duration
	// KV is the shared L2 bucket (see EnsureBucket); nil: no L2.
	KV jetstream.KeyValue
	// L2Timeout bounds each L2 read and write. Default 250ms.
	L2Timeout time.Duration
	// Now is the clock of entry expiry. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Stats are counted where they happen.
type Stats struct {
	Hits, L2Hits, Misses, Shared uint64 // Hits counts L1 and L2 hits
	Evictions                    uint64 // removed for space by L1
	Expired                      uint64 // found past their expiry (counted in Misses)
	L2Errors, L2Dropped          uint64
	Entries                      int // in L1
	Bytes                        int // L1's allocated bytes
}

// Cache is safe for concurrent use. Close stops its L2 writer.
type Cache struct {
	l1      *bigcache.BigCache
	kv      jetstream.KeyValue
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger
	sf      singleflight.Group

	writes    chan l2Write
	stop      chan struct{}
	writerWG  sync.WaitGroup
	closeOnce sync.Once

	hits, l2Hits, misses, shared, evictions, expired, l2Errors, l2Dropped atomic.Uint64
}

type l2Write struct {
	key string
	val []byte
}

// New makes a cache; it starts the L2 writer when opts.KV is set.
func New(ctx context.Context, o Options) (*Cache, error) {
	if o.MaxSizeMB <= 0 {
		o.MaxSizeMB = 64
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 24 * time.Hour
	}
	if o.L2Timeout <= 0 {
		o.L2Timeout = 250 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Cache{kv: o.KV, timeout: o.L2Timeout, now: o.Now, log: o.Logger, stop: make(chan struct{})}
	cfg := bigcache.Config{
		Shards:             64,
		LifeWindow:         o.MaxTTL,
		CleanWindow:        min(max(o.MaxTTL/4, time.Second), time.Minute),
		MaxEntriesInWindow: 64 * 1024,
		MaxEntrySize:       512,
		HardMaxCacheSize:   o.MaxSizeMB,
		OnRemoveWithReason: func(_ string, _ []byte, r bigcache.RemoveReason) {
			if r == bigcache.NoSpace {
				c.evictions.Add(1)
			}
		},
	}
	// The initial allocation must stay within the cap.
	if perShard := cfg.MaxEntriesInWindow / cfg.Shards * cfg.MaxEntrySize; perShard*cfg.Shards > o.MaxSizeMB<<20 {
		cfg.MaxEntriesInWindow = (o.MaxSizeMB << 20) / cfg.MaxEntrySize
	}
	// Not ctx: bigcache prints a plain-text line to standard output when
	// its context ends, which would break the worker's JSON log; Close
	// stops its cleaner instead.
	l1, err := bigcache.New(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.l1 = l1
	if c.kv != nil {
		c.writes = make(chan l2Write, 1024)
		c.writerWG.Go(c.writeL2)
	}
	return c, nil
}

// Close stops the L2 writer (pending writes are dropped) and frees L1.
func (c *Cache) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.stop)
		c.writerWG.Wait()
		err = c.l1.Close()
	})
	return err
}

// Key is the cache key of a task: its type, the SHA-256 of its payload and
// the values of the route's key headers (canonical names, sorted), hex
// encoded so that it is also a valid key-value key.
func Key(typ string, payload []byte, h nats.Header, keyHeaders []string) string {
	sum := sha256.New()
	writeField := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		sum.Write(n[:])
		sum.Write(b)
	}
	writeField([]byte(typ))
	writeField(payload)
	if len(keyHeaders) > 0 {
		names := make([]string, len(keyHeaders))
		for i, k := range keyHeaders {
			names[i] = textproto.CanonicalMIMEHeaderKey(k)
		}
		slices.Sort(names)
		for _, k := range slices.Compact(names) {
			writeField([]byte(k))
			writeField([]byte(strings.Join(headerValues(h, k), "\x00")))
		}
	}
	var out [sha256.Size]byte
	return hex.EncodeToString(sum.Sum(out[:0]))
}

// headerValues reads k in any case: NATS headers are case-sensitive.
func headerValues(h nats.Header, k string) []string {
	if v, ok := h[k]; ok {
		return v
	}
	for name, v := range h {
		if strings.EqualFold(name, k) {
			return v
		}
	}
	return nil
}

// Get returns the entry of key if it is there and not expired, from L1,
// else (for a shared policy) from L2, filling L1.
func (c *Cache) Get(ctx context.Context, key string, p Policy) (Entry, bool) {
	now := c.now()
	if b, err := c.l1.Get(key); err == nil {
		if e, ok := decode(b); ok {
			if now.Before(e.Expires) {
				c.hits.Add(1)
				return e, true
			}
			c.expired.Add(1)
		}
	}
	if p.Shared && c.kv != nil {
		if e, ok := c.getL2(ctx, key, now); ok {
			c.hits.Add(1)
			c.l2Hits.Add(1)
			_ = c.l1.Set(key, encode(e))
			return e, true
		}
	}
	c.misses.Add(1)
	return Entry{}, false
}

func (c *Cache) getL2(ctx context.Context, key string, now time.Time) (Entry, bool) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kve, err := c.kv.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			c.l2Errors.Add(1)
		}
		return Entry{}, false
	}
	e, ok := decode(kve.Value())
	if !ok {
		c.l2Errors.Add(1)
		return Entry{}, false
	}
	if !now.Before(e.Expires) {
		c.expired.Add(1)
		return Entry{}, false
	}
	return e, true
}

// Set stores a successful result for p.TTL: in L1 at once, in L2 (shared
// policies) by the background writer, which drops writes it cannot keep up
// with rather than slow tasks down.
func (c *Cache) Set(key string, p Policy, body []byte, backend string) {
	if p.TTL <= 0 {
		return
	}
	b := encode(Entry{Body: body, Backend: backend, Expires: c.now().Add(p.TTL)})
	_ = c.l1.Set(key, b) // too large for a shard: not cached
	if p.Shared && c.kv != nil {
		select {
		case c.writes <- l2Write{key: key, val: b}:
		default:
			c.l2Dropped.Add(1)
		}
	}
}

func (c *Cache) writeL2() {
	for {
		select {
		case <-c.stop:
			return
		case w := <-c.writes:
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			if _, err := c.kv.Put(ctx, w.key, w.val); err != nil {
				c.l2Errors.Add(1)
				c.log.Debug("shared cache write", "err", err)
			}
			cancel()
		}
	}
}

// Do runs fn once for all callers asking for key at the same time: the
// first caller runs it, the others wait and share its outcome (shared is
// true for them). A successful result is stored with Set. fn runs under
// the first caller's context: if that caller is cancelled (its worker
// drains), the others get the error too and their tasks are retried.
func (c *Cache) Do(key string, p Policy, fn func() (body []byte, backend string, err error)) (e Entry, shared bool, err error) {
	ran := false // singleflight says "shared" to the caller that ran fn too
	v, err, _ := c.sf.Do(key, func() (any, error) {
		ran = true
		body, backend, err := fn()
		if err != nil {
			return nil, err
		}
		c.Set(key, p, body, backend)
		return Entry{Body: body, Backend: backend}, nil
	})
	if !ran {
		c.shared.Add(1)
	}
	if err != nil {
		return Entry{}, !ran, err
	}
	return v.(Entry), !ran, nil
}

// Stats returns the counters so far.
func (c *Cache) Stats() Stats {
	return Stats{
		Hits: c.hits.Load(), L2Hits: c.l2Hits.Load(), Misses: c.misses.Load(), Shared: c.shared.Load(),
		Evictions: c.evictions.Load(), Expired: c.expired.Load(),
		L2Errors: c.l2Errors.Load(), L2Dropped: c.l2Dropped.Load(),
		Entries: c.l1.Len(), Bytes: c.l1.Capacity(),
	}
}

// Entry encoding: expiry (unix ns, 8 bytes), backend length (1 byte),
// backend, body.
func encode(e Entry) []byte {
	backend := e.Backend
	if len(backend) > 255 {
		backend = backend[:255]
	}
	b := make([]byte, 9+len(backend)+len(e.Body))
	binary.BigEndian.PutUint64(b, uint64(e.Expires.UnixNano()))
	b[8] = byte(len(backend))
	copy(b[9:], backend)
	copy(b[9+len(backend):], e.Body)
	return b
}

func decode(b []byte) (Entry, bool) {
	if len(b) < 9 || len(b) < 9+int(b[8]) {
		return Entry{}, false
	}
	n := int(b[8])
	return Entry{
		Expires: time.Unix(0, int64(binary.BigEndian.Uint64(b))),
		Backend: string(b[9 : 9+n]),
		Body:    b[9+n:],
	}, true
}

// Bucket is the name of the shared (L2) key-value bucket.
func Bucket(t bus.Topology) string {
	if t.Prefix == "" {
		return "RESULT_CACHE"
	}
	return t.Prefix + "_RESULT_CACHE"
}

// EnsureBucket creates or opens the shared bucket (file storage). Keys
// expire maxTTL after their last write; each entry's own expiry holds to
// the second on reads.
func EnsureBucket(ctx context.Context, js jetstream.KeyValueManager, t bus.Topology, maxTTL time.Duration) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket(t),
		Description: "Breakwater: results shared between workers (routes with cache.shared)",
		TTL:         maxTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("cache bucket %s: %w", Bucket(t), err)
	}
	return kv, nil
}
